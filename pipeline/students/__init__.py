"""Student architectures, registered by name."""

from pipeline.students import lstm  # noqa: F401  (registers the architecture)
from pipeline.students.base import (
    STUDENTS,
    StudentConfig,
    grid_students,
    parse_grid,
    parse_student,
    parse_students,
)

__all__ = [
    "STUDENTS",
    "StudentConfig",
    "grid_students",
    "parse_grid",
    "parse_student",
    "parse_students",
]
