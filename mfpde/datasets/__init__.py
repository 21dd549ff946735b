"""Data sets: random teachers and the real tables shipped in `data/`."""

from ._tables import diabetes as diabetes, digits as digits
from ._teacher import TEACHER_2D_DIRECTIONS as TEACHER_2D_DIRECTIONS, teacher as teacher, teacher_student_2d as teacher_student_2d
