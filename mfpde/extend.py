"""The pieces an algorithm is built from, for writing one outside `mfpde` (as the `solvers` package does).

An algorithm subclasses `mfpde.AbstractAlgorithm` and, in its `solve`, checks its arguments (`as_float_array`,
`is_concrete`), reads the save times (`save_times`), measures compilation apart from execution (`Timer`), builds its
labelled result (`make_dataset`; `result_code` turns a diffrax, optimistix or lineax result into the stored integer)
and reports a failed run (`warn_or_raise`). Studies and checkpointed runs store their chunks in a `ChunkStore` named
by a `fingerprint` of what identifies the run (`flatten_attrs`, `numerics`).
"""

from ._checks import as_float_array as as_float_array
from ._checks import is_concrete as is_concrete
from ._ensemble import is_solver_parameter as is_solver_parameter
from ._netcdf import flatten_attrs as flatten_attrs
from ._saveat import save_times as save_times
from ._solution import make_dataset as make_dataset
from ._solution import result_code as result_code
from ._solution import warn_or_raise as warn_or_raise
from ._store import ChunkStore as ChunkStore
from ._store import fingerprint as fingerprint
from ._store import numerics as numerics
from ._timing import Timer as Timer
from .measures._base import coordinate_vector as coordinate_vector
