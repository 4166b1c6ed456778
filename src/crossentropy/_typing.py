"""Type aliases of the core: what an array is, and the option strings each function takes.

Private to the package (importable as ``crossentropy._typing``, not re-exported by
:mod:`crossentropy`; docs/design.md, "Types").

**Why** ``Array`` **is** ``Any``. Every function takes NumPy, PyTorch, JAX or CuPy arrays through
array-api-compat and returns the kind of array it was given (the namespace of the first array
among its arguments; NumPy for lists and scalars). No static type says that honestly:

- a ``Protocol`` of the array-API attributes the code reads (``shape``, ``dtype``, ``ndim``,
  arithmetic) would be true of the arguments but would make every result lose what its own
  library gives it: a PyTorch user's ``loss.backward()`` or ``loss.item()``, a NumPy user's
  ``.tolist()``, would be type errors;
- a type variable (``def softmax(x: T) -> T``) cannot state the rule that picks the result's
  library from several arguments, and is false for lists (which come back as NumPy arrays);
- the array API's own typing (``array-api-typing``) has no release yet beyond a placeholder, and
  PyTorch tensors do not implement ``__array_namespace__``.

So ``Array`` is ``Any``, as SciPy and array-api-extra define their own ``Array``: a checker accepts every array library
and keeps each result's own methods, and the name documents, in signatures and in the API
reference, which parameters are arrays. ``ArrayLike`` marks the parameters that also take nested
lists of numbers or Python scalars (converted by ``_array.as_namespace_array``). What the types do
check is everything else: the option literals below (``reduction="avg"`` is a type error), the
numbers, the named tuples returned, and, through ``@overload``, that ``return_stats=True`` returns a
``(loss, LossStats)`` pair. When the array API publishes a stable array protocol, ``Array`` can
become it without changing a signature.

The option literals are the single source of each option's values: the runtime checks build their
tuples from them (``typing.get_args``), and still accept and validate any value at run time, since
callers need not run a type checker.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

__all__ = [
    "Array",
    "ArrayLike",
    "BinStrategy",
    "CalibrationNorm",
    "ClassWeightScheme",
    "DType",
    "Divergence",
    "Namespace",
    "Reduction",
]

Array: TypeAlias = Any
"""An array of NumPy, PyTorch, JAX or CuPy (any array-API library through array-api-compat).

``Any``, on purpose: see the module docstring."""

ArrayLike: TypeAlias = Any
"""An :data:`Array`, or nested lists of numbers or a Python scalar, which become NumPy arrays (or
arrays of the library of the other array arguments)."""

Namespace: TypeAlias = Any
"""An array-API namespace, as ``array_api_compat.array_namespace`` returns it (a module)."""

DType: TypeAlias = Any
"""A dtype of some array library (``numpy.dtype``, ``torch.dtype``, ...)."""

Reduction: TypeAlias = Literal["mean", "sum", "none"]
"""The ``reduction`` of every loss: the (weighted) mean, the sum, or the per-sample losses."""

Divergence: TypeAlias = Literal["forward_kl", "reverse_kl", "jsd", "tvd"]
"""The ``divergence`` of :func:`crossentropy.distillation_loss`."""

CalibrationNorm: TypeAlias = Literal["l1", "l2", "max"]
"""The ``norm`` of the calibration errors: ECE (``"l1"``), RMS (``"l2"``), MCE (``"max"``)."""

BinStrategy: TypeAlias = Literal["uniform", "quantile"]
"""The binning ``strategy`` of the calibration metrics: equal widths or equal counts."""

ClassWeightScheme: TypeAlias = Literal["balanced", "inverse_frequency", "effective_number"]
"""The ``scheme`` of :func:`crossentropy.class_weights`."""
