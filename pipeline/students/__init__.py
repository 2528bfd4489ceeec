"""Student architectures, registered by name."""

from pipeline.students import distilhubert, lstm  # noqa: F401  (register the architectures)
from pipeline.students.base import (
    STUDENTS,
    StudentConfig,
    SweepConfig,
    grid_students,
    parse_grid,
    parse_student,
    parse_students,
    sweep_students,
)

__all__ = [
    "STUDENTS",
    "StudentConfig",
    "SweepConfig",
    "grid_students",
    "parse_grid",
    "parse_student",
    "parse_students",
    "sweep_students",
]
