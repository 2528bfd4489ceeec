"""Student architectures, registered by name: their modules live in :mod:`pipeline.nn` (torch
only, so an exported student takes them along), their configs, checkpoints and sizes here."""

from pipeline.nn.students import ARCHITECTURES
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

for _architecture in ARCHITECTURES.values():
    STUDENTS.register(_architecture)

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
