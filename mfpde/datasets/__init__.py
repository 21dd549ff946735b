"""Data sets: finite training sets (random teachers, the real tables shipped in `data/`) and populations (data
distributions for the infinite-data risk).

Finite: `teacher`, `teacher_student_2d`, `digits`, `diabetes` (each an `mfpde.Dataset`).
Populations: `gaussian`, `isotropic_gaussians`, `teacher_population` (each an `mfpde.Population`; `Teacher` is the
target network of a population).
"""

from .._population import Population as Population, Teacher as Teacher
from ._population import gaussian as gaussian, isotropic_gaussians as isotropic_gaussians, teacher_population as teacher_population
from ._tables import diabetes as diabetes, digits as digits
from ._teacher import TEACHER_2D_DIRECTIONS as TEACHER_2D_DIRECTIONS, teacher as teacher, teacher_student_2d as teacher_student_2d
