"""The Numba backend: fused CPU kernels for NumPy arrays and CPU PyTorch tensors.

- :func:`softmax_cross_entropy_rows`: one read of the logits and, for the gradient, one write,
  with every option of the core API (class weights, ignored rows, label smoothing, z-loss,
  soft-cap, sample weights); index or probability targets; forward-only calls allocate O(N).
- :func:`sigmoid_cross_entropy_elements`: the elementwise binary and multi-label loss, with
  weights, positive weights, label smoothing and sample weights in any broadcast layout.

Half precision is read as stored and accumulated in float32, the gradient rounded once: float16
from NumPy, and bfloat16 as its uint16 bit patterns (``storage="bfloat16"``: how PyTorch's
bfloat16 reaches NumPy without a copy). Rows run in parallel on Numba's threads
(``NUMBA_NUM_THREADS``); indices are 64-bit, so inputs of more than 2^31 elements are fine.
Read-only inputs (``np.frombuffer``, ``np.load(..., mmap_mode="r")``) are fine too: nothing is
ever written into the caller's arrays unless the gradient is asked to overwrite the logits.

Threads: unless you chose Numba's threading layer (``NUMBA_THREADING_LAYER``), the kernels'
first call picks it. Without PyTorch in the process, it keeps GNU OpenMP out: TBB if the ``tbb``
package is installed, else Numba's built-in ``workqueue``, so a ``fork`` child can call the
kernels after its parent did and Numba's threads sleep between calls instead of spinning on the
cores BLAS needs next (the kernels' launches from several Python threads take turns under
``workqueue``). With PyTorch, the kernels run on PyTorch's own OpenMP threads (Numba's GNU
OpenMP layer binds to PyTorch's runtime), so a kernel right after a PyTorch operation does not
fight PyTorch's spinning threads for the cores; in a ``fork`` child of such a process (a
``DataLoader`` worker) GNU OpenMP cannot run, and the losses run their generic code there. The
layer is process-wide and fixed at Numba's first parallel launch
(:mod:`crossentropy.kernels.numba._threading` has the details and the measurements).

The first call in a process compiles the kernels it needs (seconds) and stores them in an
on-disk cache in the user's cache folder (``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux,
``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows, then ``crossentropy/numba``), never
in the package's own folder; ``NUMBA_CACHE_DIR`` overrides it. Later processes load them in a
fraction of that. The cache is cleared when any source file of the kernels changes (Numba
itself watches only the file of the kernel).
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numba
import numpy as np

from ..._array import is_torch_tensor, may_overlap, same_memory
from .._in_place import check_softmax_in_place
from . import _threading
from ._math import BFLOAT16_BITS, FLOAT16_BITS

__all__ = ["accepts", "sigmoid_cross_entropy_elements", "softmax_cross_entropy_rows"]

# Elements a row of the sigmoid kernel covers when no option ties rows to the class axis.
_SIGMOID_ROW = 8192
# NumPy dtypes the kernels read as stored; half precision accumulates in float32.
_KERNEL_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

_threading.configure()  # Numba's threading layer: fork-safe, idle between calls, PyTorch's neighbour (see _threading)


def accepts(x: Any) -> bool:
    """Whether the kernels read the logits ``x`` as stored: a NumPy float16/32/64 array, or a CPU PyTorch
    tensor of float16/32/64 or bfloat16; never in a ``fork`` child of a process whose kernels ran on
    GNU OpenMP, which cannot run there (:func:`crossentropy.kernels.numba._threading.usable`)."""
    if isinstance(x, np.ndarray):
        ok = x.dtype in _KERNEL_DTYPES
    elif is_torch_tensor(x):
        import torch

        ok = x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    else:
        return False
    return ok and _threading.usable()


def _host(x: Any) -> Any:
    """A NumPy view of ``x``: a NumPy array as it is, a CPU PyTorch tensor detached and shared
    (bfloat16 as its uint16 bit patterns), None as None."""
    if x is None or isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_torch_array(x):
        import torch

        x = x.detach()
        return (x.view(torch.uint16) if x.dtype == torch.bfloat16 else x).numpy()
    return np.asarray(x)


def _host_logits(logits: Any, storage: str | None) -> tuple[np.ndarray, str | None]:
    """:func:`_host` of the logits, and how to read them (``"bfloat16"`` for a PyTorch bfloat16 tensor)."""
    if array_api_compat.is_torch_array(logits):
        import torch

        if logits.dtype == torch.bfloat16:
            storage = "bfloat16"
    return _host(logits), storage


def _like(result: np.ndarray | None, template: Any) -> Any:
    """``result`` as the kind of array ``template`` is: a PyTorch tensor sharing its memory (bfloat16
    again for uint16 bit patterns of a bfloat16 template), or the NumPy array itself."""
    if result is None or not array_api_compat.is_torch_array(template):
        return result
    import torch

    tensor = torch.from_numpy(result)
    return tensor.view(torch.bfloat16) if template.dtype == torch.bfloat16 and tensor.dtype == torch.uint16 else tensor


def _storage(x: np.ndarray, storage: str | None) -> tuple[np.ndarray, np.dtype]:
    """``x`` as the kernels read it (half precision as bit patterns) and the accumulation dtype."""
    if storage == "bfloat16":
        if x.dtype != np.uint16:
            raise TypeError(f"`storage='bfloat16'` takes the bit patterns as uint16; got dtype {x.dtype}")
        return x.view(BFLOAT16_BITS), np.dtype(np.float32)
    if storage is not None:
        raise ValueError(f"`storage` must be None or 'bfloat16'; got {storage!r}")
    if x.dtype == np.float16:
        return x.view(FLOAT16_BITS), np.dtype(np.float32)
    if x.dtype not in _KERNEL_DTYPES:
        raise TypeError(f"the kernels take float16, float32 or float64 logits; got dtype {x.dtype}")
    return x, x.dtype


def softmax_cross_entropy_rows(
    logits: np.ndarray,
    targets: np.ndarray,
    *,
    weight: np.ndarray | None,
    row_weight: np.ndarray,
    grad_factor: np.ndarray | None,
    smoothing: float,
    z: float,
    cap: float | None,
    storage: str | None = None,
    out: np.ndarray | None = None,
    temperature: float = 1.0,
    stats: bool = False,
) -> tuple:
    r"""Per-row weighted losses :math:`r_n \ell_n` and, when ``grad_factor`` is given, the gradient.

    The loss reads :math:`u = c \tanh(x / (T c))` (:math:`x / T` without a soft-cap): the
    logits divided by the ``temperature`` :math:`T` first, then soft-capped; the gradient is with
    respect to :math:`x` (its factor :math:`1/T` included).

    Parameters
    ----------
    logits : ndarray or CPU torch.Tensor of shape (..., n_classes)
        Validated logits, class axis last: float16, float32 or float64, a PyTorch bfloat16
        tensor, or bfloat16 bit patterns as uint16 with ``storage="bfloat16"``. Half precision
        is read as stored and accumulated in float32. PyTorch tensors are read in place (no
        copy) and the results are PyTorch tensors; every array argument may then be one.
    targets : ndarray
        Integer class indices of the batch shape, every entry in ``[0, n_classes)`` (ignored
        samples carry any valid index and a ``row_weight`` of 0), or probabilities of the
        logits' shape.
    weight : ndarray of shape (n_classes,) or None
        Class weights.
    row_weight : ndarray of the batch shape
        :math:`r_n`, the sample weight times "not ignored".
    grad_factor : ndarray of the batch shape, or None
        :math:`r_n` times the reduction's scale; None computes the loss only, with O(N) extra
        memory.
    smoothing, z : float
        Label smoothing and z-loss coefficient.
    cap : float or None
        Soft-cap.
    storage : {None, "bfloat16"}
        How to read uint16 ``logits``.
    out : ndarray of the logits' shape and dtype, C-contiguous, optional
        Where to write the gradient (a buffer reused across steps saves the allocation and the
        page faults of a fresh one). It must not overlap ``logits``, unless it is ``logits``
        itself: then the gradient overwrites the logits (index targets, float32/float64
        C-contiguous logits, no soft-cap, no label smoothing with class weights).
    temperature : float > 0, default 1
        :math:`T`, applied as a factor :math:`1/T` on each logit as it is read (no scaled copy).
    stats : bool, default False
        Index targets only: also return, per row, the log-sum-exp of :math:`u`, the entropy of
        :math:`\operatorname{softmax}(u)` and whether the first maximum of :math:`u` is the target
        (bool), from the same pass over the logits (0, 0 and False where ``row_weight`` is 0).

    Returns
    -------
    (losses, grad) or, with ``stats``, (losses, grad, (lse, entropy, correct))
        ``losses`` of the batch shape in the accumulation dtype (float32 for half precision);
        ``grad`` of the logits' shape and dtype (uint16 bit patterns for bfloat16), or None;
        ``out`` itself when given. The statistics have the batch shape, ``lse`` and ``entropy``
        in the accumulation dtype.
    """
    from ._softmax import BLOCK, softmax_cross_entropy_index, softmax_cross_entropy_soft

    lock = _threading.launch_lock()  # before numba.get_num_threads() below starts Numba's threads
    caller = logits
    logits, storage = _host_logits(logits, storage)
    targets, weight, row_weight, grad_factor = (_host(a) for a in (targets, weight, row_weight, grad_factor))
    stored, dtype = _storage(logits, storage)
    scalar = dtype.type
    x = _rows(stored, stored.dtype)
    n_rows, n_classes = x.shape
    index_targets = targets.ndim == logits.ndim - 1
    if stats and not index_targets:
        raise ValueError("`stats` needs class-index targets; got probabilities of the logits' shape")
    t = np.ascontiguousarray(targets.reshape(-1), dtype=np.int64) if index_targets else _rows(targets, dtype)
    w = np.empty(0, dtype) if weight is None else np.ascontiguousarray(weight, dtype=dtype)
    r = np.ascontiguousarray(row_weight.reshape(-1), dtype=dtype)
    store = grad_factor is not None
    losses = np.empty(n_rows, dtype)
    half = x.dtype != dtype
    # Placeholders for the buffers a forward-only call does not use.
    factor, grad, block_ref = r, np.empty((1, 1), x.dtype), np.empty((1, 1), dtype)
    scratch = np.empty((numba.get_num_threads(), 1), dtype)
    in_place = False
    if store:
        factor = np.ascontiguousarray(grad_factor.reshape(-1), dtype=dtype)
        if temperature != 1.0:  # the gradient's factor 1/T, once per row
            factor = factor * scalar(1.0 / temperature)
        if out is None:
            grad = np.empty((n_rows, n_classes), x.dtype)
        else:
            in_place = _writes_over_logits(
                _host(out),
                logits,
                index_targets=index_targets,
                weighted_smoothing=bool(smoothing and weight is not None),
                cap=cap,
            )
            grad = x if in_place else _gradient_buffer(_host(out), logits, x.dtype).reshape(-1, n_classes)
        if half:  # exponentials are kept in float32 rows, one per thread
            scratch = np.empty((numba.get_num_threads(), n_classes), dtype)
        block_ref = np.empty((n_rows, -(-n_classes // BLOCK)), dtype)
    options = (scalar(smoothing), scalar(z), scalar(1.0 / temperature), scalar(cap or 0.0))
    with lock:
        if index_targets:
            rows = n_rows if stats else 1  # placeholders of one entry when not asked
            lse, entropy, correct = np.empty(rows, dtype), np.empty(rows, dtype), np.empty(rows, np.bool_)
            softmax_cross_entropy_index(
                x, t, w, r, factor, *options, losses, grad, scratch, block_ref, store, in_place,
                stats, lse, entropy, correct,
            )  # fmt: skip
        else:
            softmax_cross_entropy_soft(x, t, w, r, factor, *options, losses, grad, scratch, block_ref, store, in_place)
    batch_shape = logits.shape[:-1]
    losses = _like(losses.reshape(batch_shape), caller)
    grad = None if not store else _like(grad.view(logits.dtype).reshape(logits.shape), caller) if out is None else out
    if not stats:
        return losses, grad
    return losses, grad, tuple(_like(a.reshape(batch_shape), caller) for a in (lse, entropy, correct))


def _gradient_buffer(out: np.ndarray, logits: np.ndarray, kernel_dtype: np.dtype) -> np.ndarray:
    """``out`` checked and viewed as the kernels write it (half precision as bit patterns), the logits' shape."""
    if not isinstance(out, np.ndarray) or out.shape != logits.shape or out.dtype != logits.dtype:
        got = f"{type(out).__name__} of shape {getattr(out, 'shape', None)} and dtype {getattr(out, 'dtype', None)}"
        rule = f"an array of the logits' shape {logits.shape} and dtype {logits.dtype}"
        raise ValueError(f"`out` must be {rule}; got {got}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("`out` must be a writeable C-contiguous array")
    if may_overlap(out, logits):
        raise ValueError("`out` must not overlap `logits` unless it is `logits` itself (the gradient written in place)")
    return out.view(kernel_dtype)


def _writes_over_logits(
    out: np.ndarray, logits: np.ndarray, *, index_targets: bool, weighted_smoothing: bool, cap: float | None
) -> bool:
    """True when ``out`` is ``logits`` itself, and check that the gradient can then overwrite them
    (:func:`check_softmax_in_place`)."""
    if not same_memory(out, logits):
        return False
    check_softmax_in_place(
        contiguous=bool(logits.flags.c_contiguous and logits.flags.writeable),
        dtype=logits.dtype,
        index_targets=index_targets,
        weighted_smoothing=weighted_smoothing,
        cap=cap,
    )
    return True


# What the in-place errors call writing the gradient over the logits.


def _rows(x: np.ndarray, dtype: Any) -> np.ndarray:
    """``x`` as C-contiguous (rows, classes) of ``dtype`` (a view when it already is)."""
    return np.ascontiguousarray(x.reshape(-1, x.shape[-1]), dtype=dtype)


def sigmoid_cross_entropy_elements(
    logits: np.ndarray,
    targets: np.ndarray,
    *,
    weight: np.ndarray | None,
    pos_weight: np.ndarray | None,
    sample_weight: np.ndarray | None,
    smoothing: float,
    grad_scale: float | None,
    per_element: bool,
    storage: str | None = None,
    denominator: float | None = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    r"""Weighted sigmoid cross-entropy losses and, when ``grad_scale`` is given, the gradient.

    Parameters
    ----------
    logits : ndarray or CPU torch.Tensor of any shape
        float16, float32 or float64, a PyTorch bfloat16 tensor, or bfloat16 bit patterns as
        uint16 with ``storage="bfloat16"``. PyTorch tensors in, PyTorch tensors out (as
        :func:`softmax_cross_entropy_rows`).
    targets : ndarray of the logits' shape
        Probabilities in [0, 1], in the accumulation dtype.
    weight, pos_weight : ndarray broadcastable to the logits' shape, or None
        Validated, in the accumulation dtype.
    sample_weight : ndarray or None
        The leading axes' sample weights with trailing axes of length 1 (broadcastable).
    smoothing : float
        Label smoothing :math:`\varepsilon` (targets become :math:`(1-\varepsilon) t + \varepsilon/2`).
    grad_scale : float, 0-d array or None
        The reduction's factor of the gradient; None computes the losses only.
    per_element : bool
        Return every element's loss (``reduction="none"``) instead of their sum.
    storage : {None, "bfloat16"}
        How to read uint16 ``logits``.
    denominator : float or 0-d array, optional
        Return the mean, the sum divided by ``denominator`` (0 for a zero denominator), instead
        of the sum (``per_element`` False). Where the sum passes the largest float while the mean
        may not, the losses are summed again each times :math:`1/D`, so that no partial sum
        exceeds the mean: in a second, forward-only pass, or in the same pass when the gradient
        overwrites the logits.
    out : ndarray or CPU torch.Tensor of the logits' shape and dtype, C-contiguous, optional
        Where to write the gradient (with ``grad_scale``). It must not overlap ``logits``,
        unless it is ``logits`` itself: the gradient then overwrites them, element by element
        (any dtype; the logits must be writeable and C-contiguous).

    Returns
    -------
    (losses, grad)
        ``losses`` of the logits' shape, or their sum (or mean) as a 0-d array, in the
        accumulation dtype; ``grad`` of the logits' shape and dtype, ``out`` itself when
        given, or None.
    """
    from ._sigmoid import sigmoid_cross_entropy_flat

    grad_scale = None if grad_scale is None else float(grad_scale)  # a number, or a 0-d array on the host
    denominator = None if denominator is None else float(denominator)
    caller = logits
    logits, storage = _host_logits(logits, storage)
    targets, weight, pos_weight, sample_weight = (_host(a) for a in (targets, weight, pos_weight, sample_weight))
    stored, dtype = _storage(logits, storage)
    shape = logits.shape
    size = int(np.prod(shape))
    n_classes = shape[-1] if len(shape) else 1
    layout = _SigmoidLayout(shape, dtype, weight, pos_weight, sample_weight)
    x = np.ascontiguousarray(stored).reshape(-1)
    t = np.ascontiguousarray(targets, dtype=dtype).reshape(-1)
    width = layout.width(n_classes, size)
    n_rows = -(-size // width)
    w_vector, w_full = layout.option(layout.weight, width)
    q_vector, q_full = layout.option(layout.pos_weight, width)
    row_factor = layout.row_factor(n_rows)
    losses = np.empty(size if per_element else n_rows, dtype)
    store = grad_scale is not None
    in_place = store and out is not None and same_memory(_host(out), logits)
    if in_place and not (logits.flags.c_contiguous and logits.flags.writeable):
        raise ValueError("writing the gradient over the logits (`out=logits`) needs writeable C-contiguous logits")
    if store and out is not None and not in_place:
        grad = _gradient_buffer(_host(out), logits, x.dtype).reshape(-1)
    else:
        grad = np.empty(size if store and not in_place else 1, x.dtype)
    mean = denominator is not None and not per_element
    inverse = dtype.type(1.0 / denominator if mean and denominator != 0 else 0.0)
    scaled = np.empty(n_rows if in_place and not per_element else 1, dtype)  # the kernel fills it in place

    def run(row_factor: np.ndarray, losses: np.ndarray, store: bool) -> None:
        options = (dtype.type(smoothing), dtype.type(grad_scale if store else 0.0))
        with _threading.launch_lock():
            sigmoid_cross_entropy_flat(
                x, t, w_vector, w_full, q_vector, q_full, row_factor, *options, losses, grad, store, in_place, scaled,
                inverse,
            )  # fmt: skip

    run(row_factor, losses, store)
    with np.errstate(over="ignore"):  # a sum past the largest float is inf
        loss = losses.reshape(shape) if per_element else np.asarray(losses.sum(dtype=dtype))
    if mean and denominator == 0:
        loss = np.zeros((), dtype)
    elif mean and not np.isinf(loss):
        loss = np.asarray(loss / dtype.type(denominator))
    elif mean:  # the sum overflowed, the mean may not: the losses each divided by D first
        if not in_place:  # the logits are still there: a forward-only pass with the row factors divided
            run(row_factor * inverse, losses, False)
            scaled = losses
        loss = np.asarray(scaled.sum(dtype=dtype))
    if not store:
        return _like(loss, caller), None
    return _like(loss, caller), (_like(grad.view(logits.dtype).reshape(shape), caller) if out is None else out)


class _SigmoidLayout:
    """How the options of the sigmoid kernel map onto rows of the flat input.

    Each option becomes a vector repeated along every row (a scalar, or one entry per class when
    rows are whole multiples of the class axis) or an array of the whole input; sample weights
    become one factor a row when rows follow the class axis, else part of the weight.
    """

    def __init__(self, shape, dtype, weight, pos_weight, sample_weight):
        self.shape, self.dtype = shape, dtype
        self.row_weight = None  # one sample weight per row of the class axis
        if sample_weight is not None and len(shape) >= 2 and sample_weight.shape[-1] == 1:
            self.row_weight = np.broadcast_to(sample_weight[..., 0], shape[:-1]).reshape(-1)
        elif sample_weight is not None:  # one weight per element: part of the elementwise weight
            weight = sample_weight if weight is None else weight * sample_weight
        self.weight, self.pos_weight = self._kind(weight), self._kind(pos_weight)

    def _kind(self, option):
        """``("ones" | "scalar" | "class" | "full", values)`` for an option broadcastable to the shape."""
        if option is None:
            return "ones", None
        if option.size == 1:
            return "scalar", option.reshape(-1)
        if option.shape == self.shape:  # one value per element (also a 1-D input's "per class")
            return "full", option
        leading = option.shape[:-1]
        if len(self.shape) and option.shape[-1] == self.shape[-1] and all(n == 1 for n in leading):
            return "class", option.reshape(-1)
        return "full", np.broadcast_to(option, self.shape)

    def width(self, n_classes: int, size: int) -> int:
        """Elements a row: the class axis (or a multiple of it) when an option or a sample weight follows it."""
        if self.row_weight is not None:
            return n_classes
        if "class" in (self.weight[0], self.pos_weight[0]):
            return n_classes * max(1, _SIGMOID_ROW // n_classes)
        return max(1, min(size, _SIGMOID_ROW))

    def option(self, option, width: int) -> tuple[np.ndarray, np.ndarray]:
        """``(vector of width entries, full flat array or empty)`` for the kernel."""
        kind, values = option
        empty = np.empty(0, self.dtype)
        if kind == "ones":
            return np.ones(width, self.dtype), empty
        if kind == "scalar":
            return np.full(width, values[0], self.dtype), empty
        if kind == "class":
            return np.ascontiguousarray(np.tile(values, width // values.shape[0]), dtype=self.dtype), empty
        return np.ones(width, self.dtype), np.ascontiguousarray(values, dtype=self.dtype).reshape(-1)

    def row_factor(self, n_rows: int) -> np.ndarray:
        if self.row_weight is None:
            return np.ones(n_rows, self.dtype)
        return np.ascontiguousarray(self.row_weight, dtype=self.dtype)
