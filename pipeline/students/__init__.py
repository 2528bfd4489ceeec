"""Student architectures, registered by name."""

from pipeline.students import lstm  # noqa: F401  (registers the architecture)
from pipeline.students.base import STUDENTS, StudentConfig, parse_student, parse_students

__all__ = ["STUDENTS", "StudentConfig", "parse_student", "parse_students"]
