"""Array-namespace helpers shared by every module.

Every public function is written once against the Python array API standard, through
`array-api-compat`, so the same code runs on NumPy, PyTorch, JAX and CuPy arrays and returns
the kind of array it was given. This module holds the small pieces that standard leaves out:
picking the namespace from several arguments, choosing the dtype arithmetic happens in,
``0 * log 0 = 0`` products, and reading a data-dependent condition on the host only when the
array library allows it (a JAX tracer under ``jit`` does not).
"""

from __future__ import annotations

import math
import sys

import array_api_compat
import numpy as np

from ._typing import Array, ArrayLike, DType, Namespace

__all__ = [
    "as_namespace_array",
    "as_result_array",
    "compute_dtype",
    "concrete_bool",
    "get_namespace",
    "host_float",
    "in_host_memory",
    "is_integer",
    "is_real_floating",
    "is_torch_tensor",
    "is_transformed_tensor",
    "log_base_divisor",
    "may_overlap",
    "move_axes",
    "onehot_mask",
    "same_memory",
    "take_last",
    "xlogy",
    "xmul",
]


def _is_array(x: object) -> bool:
    return array_api_compat.is_array_api_obj(x) and not isinstance(x, (bool, int, float, complex))


def get_namespace(*arrays: object) -> Namespace:
    """Return the array namespace of the first array among ``arrays``.

    Arguments that are ``None`` are skipped. Python scalars and lists do not choose the
    namespace; when no argument is an array, NumPy is used.
    """
    for x in arrays:
        if x is not None and _is_array(x):
            return array_api_compat.array_namespace(x)
    return array_api_compat.array_namespace(np.empty(0))


def as_namespace_array(x: ArrayLike, xp: Namespace, *, name: str, like: Array | None = None) -> Array:
    """Convert ``x`` (array of any library, list or scalar) to an array of namespace ``xp``.

    ``like`` gives the device to place it on; ``name`` is the parameter ``x`` was passed as, for
    the message when nested sequences are ragged. Arrays already in ``xp`` are returned as they
    are, so autograd history and memory are kept.
    """
    if _is_array(x) and array_api_compat.array_namespace(x) is xp:
        return x
    device = array_api_compat.device(like) if like is not None else None
    if array_api_compat.is_torch_array(x) and not array_api_compat.is_torch_namespace(xp):
        # A torch tensor given beside arrays of another library: go through NumPy on the host.
        x = x.detach().cpu()
        x = x.float().numpy() if x.dtype.is_floating_point and x.element_size() < 4 else x.numpy()
    try:
        return xp.asarray(x, device=device)
    except ValueError:
        if not isinstance(x, (list, tuple)):
            raise
        from ._validation import shown  # a late import: _validation builds on this module

        raise ValueError(
            f"`{shown(name)}` must be an array, or nested lists of numbers with rows of equal length; got a ragged "
            f"{type(x).__name__}: {_where_ragged(x)}"
        ) from None


def _where_ragged(x: ArrayLike) -> str:
    """Where nested sequences stop having one shape: ``"at depth 1, a sequence of length 1 beside one of length 2"``."""

    def kind(length: int | None) -> str:
        return "a number" if length is None else f"a sequence of length {length}"

    level = [x]
    for depth in range(64):
        lengths = [len(item) if isinstance(item, (list, tuple)) else None for item in level]
        distinct = sorted(set(lengths), key=lambda n: -1 if n is None else n)
        if len(distinct) > 1:
            return f"at depth {depth}, {kind(distinct[0])} beside {kind(distinct[1])}"
        if distinct[0] is None:
            break
        level = [inner for item in level for inner in item]
    return "its entries do not form an array"


def as_result_array(x: Array, xp: Namespace) -> Array:
    """``x`` as an array of ``xp``: NumPy reductions give scalars (``np.float64``), made 0-d arrays here.

    Arrays of other libraries are returned as they are (autograd history kept).
    """
    if array_api_compat.is_numpy_namespace(xp) and not isinstance(x, np.ndarray):
        return np.asarray(x)
    return x


def host_float(x: Array) -> float:
    """``float(x)`` for a 0-d array, for messages: detaches a PyTorch tensor first, so reading a
    value that carries autograd history raises no warning."""
    if array_api_compat.is_torch_array(x):
        x = x.detach()
    return float(x)


def is_torch_tensor(x: object) -> bool:
    """``isinstance(x, torch.Tensor)`` without importing PyTorch, and traceable by TorchDynamo
    (``array_api_compat.is_torch_array`` is ``lru_cache``-wrapped, which Dynamo warns about)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def same_memory(a: Array, b: Array) -> bool:
    """Whether two arrays view exactly the same memory: the same start, shape and strides (NumPy arrays,
    or PyTorch tensors on one device). False for other kinds, which cannot be told apart here."""
    if a is b:
        return True
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        same_layout = a.shape == b.shape and a.strides == b.strides
        return same_layout and a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    if is_torch_tensor(a) and is_torch_tensor(b):
        same_layout = a.shape == b.shape and a.stride() == b.stride() and a.device == b.device
        return bool(same_layout and a.data_ptr() == b.data_ptr())
    return False


def may_overlap(a: Array, b: Array) -> bool:
    """Whether two arrays may share memory: their byte ranges intersect (NumPy's bounds check, or the span
    of each PyTorch tensor's strides). False where the library cannot tell, and for empty tensors."""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return bool(np.may_share_memory(a, b))
    if is_torch_tensor(a) and is_torch_tensor(b):
        if a.device != b.device or a.numel() == 0 or b.numel() == 0:
            return False

        def extent(t: Array) -> tuple[int, int]:
            span = sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride(), strict=True)) + 1
            return t.data_ptr(), t.data_ptr() + span * t.element_size()

        (a_start, a_stop), (b_start, b_stop) = extent(a), extent(b)
        return a_start < b_stop and b_start < a_stop
    return False


def in_host_memory(x: Array) -> bool:
    """Whether reading a value of the array ``x`` costs no device-to-host transfer: NumPy arrays, CPU
    PyTorch tensors, and JAX arrays on the CPU; not CUDA tensors, CuPy arrays or other devices."""
    if is_torch_tensor(x):
        return bool(x.device.type == "cpu")
    if array_api_compat.is_cupy_array(x):
        return False
    if array_api_compat.is_jax_array(x):
        return all(device.platform == "cpu" for device in getattr(x, "devices", lambda: ())())
    return True


def is_transformed_tensor(x: object) -> bool:
    """Whether ``x`` is a PyTorch tensor under a transform: wrapped by ``torch.func`` (``grad``, ``vmap``,
    ``jvp``, ...), batched by the legacy ``vmap`` of autograd's batched gradients
    (``is_grads_batched=True``), or carrying a forward-mode tangent (``torch.autograd.forward_ad``).

    Such a tensor has no plain memory to hand to NumPy, and no single value to branch on.
    """
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(x, torch.Tensor):
        return False
    if torch.compiler.is_compiling():  # TorchDynamo traces graphs of plain tensors; it cannot trace the checks below
        return False
    from torch.autograd import forward_ad

    functorch = torch._C._functorch
    if functorch.is_functorch_wrapped_tensor(x) or functorch.is_legacy_batchedtensor(x):
        return True
    return forward_ad.unpack_dual(x).tangent is not None


def is_real_floating(xp: Namespace, x: Array) -> bool:
    return bool(xp.isdtype(x.dtype, "real floating"))


def is_integer(xp: Namespace, x: Array) -> bool:
    return bool(xp.isdtype(x.dtype, "integral"))


def compute_dtype(xp: Namespace, dtype: DType) -> DType:
    """The dtype arithmetic is carried out in: float32 at least, float64 for float64 input.

    Half precision (float16, bfloat16) is stored as given but accumulated in float32.
    """
    if dtype == xp.float64:
        return xp.float64
    return xp.float32


def concrete_bool(condition: Array) -> bool | None:
    """``bool(condition)`` for a 0-d array, or ``None`` when its value is not known yet.

    Under JAX's ``jit`` (and other lazy libraries) values are traced, not computed; checks that
    depend on data are then skipped rather than breaking the trace.
    """
    if array_api_compat.is_lazy_array(condition):
        return None
    try:
        return bool(condition)
    except Exception:  # a tracer that refuses conversion
        return None


def move_axes(x: Array, source: int | tuple[int, ...], destination: int | tuple[int, ...], xp: Namespace) -> Array:
    """``moveaxis(x, source, destination)`` as a ``permute_dims``: the same view, for every library.

    The standard's ``moveaxis`` maps to ``torch.moveaxis``, which ``torch.func.vmap`` cannot batch;
    ``permute_dims`` (``torch.permute``) it can.
    """
    sources = (source,) if isinstance(source, int) else tuple(source)
    destinations = (destination,) if isinstance(destination, int) else tuple(destination)
    sources = tuple(axis % x.ndim for axis in sources)
    destinations = tuple(axis % x.ndim for axis in destinations)
    order = [axis for axis in range(x.ndim) if axis not in sources]
    for target, axis in sorted(zip(destinations, sources, strict=True)):
        order.insert(target, axis)
    return xp.permute_dims(x, tuple(order))


def xmul(x: Array, y: Array, xp: Namespace) -> Array:
    """``x * y`` with the convention ``0 * inf = 0``: zero wherever ``x == 0``.

    The double ``where`` keeps autograd from propagating ``0 * inf = nan`` into gradients.
    """
    zero = x == 0
    product = x * xp.where(zero, xp.ones_like(y), y)
    return xp.where(zero, xp.zeros_like(product), product)


def xlogy(x: Array, y: Array, xp: Namespace) -> Array:
    """``x * log(y)`` with ``0 * log(y) = 0`` for any ``y`` (also ``y = 0``), as ``scipy.special.xlogy``."""
    zero = x == 0
    product = x * xp.log(xp.where(zero, xp.ones_like(y), y))
    return xp.where(zero, xp.zeros_like(product), product)


def take_last(x: Array, indices: Array, xp: Namespace) -> Array:
    """``x[..., indices]`` elementwise: pick one entry per row along the last axis.

    ``indices`` has the shape of ``x`` without its last axis.
    """
    return xp.take_along_axis(x, xp.expand_dims(indices, axis=-1), axis=-1)[..., 0]


def onehot_mask(indices: Array, num_classes: int, xp: Namespace, *, like: Array) -> Array:
    """Boolean array of shape ``indices.shape + (num_classes,)``, true at each index."""
    classes = xp.arange(num_classes, dtype=indices.dtype, device=array_api_compat.device(like))
    return xp.expand_dims(indices, axis=-1) == classes


def log_base_divisor(base: float | None) -> float:
    """``ln(base)``: divide a quantity in nats by it to express it in ``base`` units.

    ``base=None`` means nats (divisor 1). The caller validates ``base`` first.
    """
    return 1.0 if base is None else math.log(base)
