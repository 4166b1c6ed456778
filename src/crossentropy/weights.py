r"""Target helpers: class weights for imbalanced data, one-hot encoding and label smoothing.

Each returns an array of the namespace of its input (NumPy in, NumPy out; PyTorch in,
PyTorch out, on the same device), ready to pass to the losses as ``weight=`` or as
probability targets.
"""

from __future__ import annotations

import math
from typing import get_args

import array_api_compat

from ._array import (
    as_namespace_array,
    compute_dtype,
    concrete_bool,
    get_namespace,
    is_integer,
    is_real_floating,
    onehot_mask,
)
from ._typing import Array, ArrayLike, ClassWeightScheme, DType, Namespace
from ._validation import (
    check_class_indices,
    check_in_unit_interval,
    check_integer_option,
    check_not_empty,
    check_number,
    check_rows_sum_to_one,
)

__all__ = ["class_weights", "one_hot", "smooth_labels"]

_SCHEMES: tuple[ClassWeightScheme, ...] = get_args(ClassWeightScheme)


def _default_float(xp: Namespace, like: Array) -> DType:
    return xp.__array_namespace_info__().default_dtypes(device=array_api_compat.device(like))["real floating"]


def _labels_and_classes(name: str, labels: ArrayLike, num_classes: object) -> tuple[Namespace, Array, int]:
    """Validated integer labels (non-empty, in ``[0, num_classes)``) and the number of classes.

    ``num_classes=None`` means ``max(labels) + 1``.
    """
    xp = get_namespace(labels)
    labels = as_namespace_array(labels, xp, name=name)
    if not is_integer(xp, labels):
        kind = "boolean" if labels.dtype == xp.bool else f"dtype {labels.dtype}"
        raise TypeError(f"`{name}` must be integer class indices; got {kind}")
    check_not_empty(name, labels)
    if num_classes is None:
        num_classes = max(int(xp.max(labels)) + 1, 1)  # negative labels are reported just below
    else:
        num_classes = check_integer_option("num_classes", num_classes, low=1)
    check_class_indices(name, labels, xp, num_classes, None)
    return xp, labels, num_classes


def class_weights(
    labels: ArrayLike,
    /,
    *,
    num_classes: int | None = None,
    scheme: ClassWeightScheme = "balanced",
    beta: float = 0.999,
) -> Array:
    r"""Per-class weights that compensate for class imbalance, for a loss's ``weight=``.

    With :math:`n` labels, :math:`C` classes and :math:`n_c` labels of class :math:`c`:

    .. math::

        \text{balanced:}\quad w_c = \frac{n}{C\,n_c}
        \qquad
        \text{inverse\_frequency:}\quad w_c \propto \frac{1}{n_c}
        \qquad
        \text{effective\_number:}\quad w_c \propto \frac{1 - \beta}{1 - \beta^{\,n_c}}

    ``"balanced"`` is exactly scikit-learn's ``compute_class_weight("balanced", ...)``. The
    other two are scaled so that :math:`\sum_c w_c = C` (weights average 1, the loss keeps its
    scale). ``"effective_number"`` (Cui et al.) weighs by the inverse of the effective number
    of samples :math:`(1 - \beta^{n_c})/(1 - \beta)`: :math:`\beta = 0` gives equal weights,
    :math:`\beta \to 1` tends to ``"inverse_frequency"``. :math:`1 - \beta^{n_c}` is computed as
    ``-expm1(n_c log beta)``, exact for :math:`\beta` close to 1.

    Parameters
    ----------
    labels : int array of shape (n_samples,), or any shape
        Class indices, non-negative; every entry counts (e.g. every pixel of a mask).
    num_classes : int, optional
        Number of classes :math:`C`; default ``max(labels) + 1``. Every class in
        ``[0, num_classes)`` must occur: an absent class has no finite weight (ValueError).
    scheme : {"balanced", "inverse_frequency", "effective_number"}, default "balanced"
    beta : float, default 0.999
        In [0, 1); used by ``"effective_number"`` only.

    Returns
    -------
    array of shape (n_classes,)
        The labels' array type, in its default floating dtype (float64 for NumPy, the default
        dtype for PyTorch, normally float32).

    References
    ----------
    Y. Cui, M. Jia, T.-Y. Lin, Y. Song and S. Belongie, "Class-Balanced Loss Based on Effective
    Number of Samples", CVPR 2019.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.array([0, 0, 0, 1])
    >>> class_weights(labels)  # 4 / (2 * 3), 4 / (2 * 1)
    array([0.66666667, 2.        ])
    >>> class_weights(labels, scheme="inverse_frequency")  # 1/3 : 1, scaled to sum to 2
    array([0.5, 1.5])
    """
    if not isinstance(scheme, str) or scheme not in _SCHEMES:
        raise ValueError(f"`scheme` must be one of 'balanced', 'inverse_frequency', 'effective_number'; got {scheme!r}")
    beta = check_number("beta", beta, low=0.0, high=1.0, high_open=True)
    xp, labels, num_classes = _labels_and_classes("labels", labels, num_classes)
    flat = xp.sort(xp.reshape(labels, (-1,)))
    n = int(flat.shape[0])
    edges = xp.arange(num_classes + 1, dtype=flat.dtype, device=array_api_compat.device(flat))
    starts = xp.searchsorted(flat, edges, side="left")
    counts = starts[1:] - starts[:-1]
    missing = counts == 0
    if concrete_bool(xp.any(missing)):
        absent = [int(c) for c in xp.nonzero(missing)[0]]
        shown = ", ".join(str(c) for c in absent[:10]) + (", ..." if len(absent) > 10 else "")
        raise ValueError(
            f"`labels` must contain every class in [0, {num_classes}) (an absent class has no finite weight; "
            f"pass `num_classes` or drop the class); got no samples of class {shown}"
        )
    dtype = _default_float(xp, labels)
    counts = xp.astype(counts, dtype)
    if scheme == "balanced":
        return n / (num_classes * counts)
    if scheme == "inverse_frequency":
        weights = 1.0 / counts
    else:
        log_beta = math.log(beta) if beta > 0 else -math.inf
        weights = 1.0 / -xp.expm1(counts * log_beta)  # the constant factor (1 - beta) cancels
    return weights * (num_classes / xp.sum(weights))


def one_hot(labels: ArrayLike, /, num_classes: int | None = None, *, dtype: DType | None = None) -> Array:
    r"""One-hot encoding of integer class indices, floating by default.

    .. math::

        y_{\ldots,c} = [\,\text{labels}_{\ldots} = c\,], \qquad c = 0, \ldots, C - 1

    Like ``torch.nn.functional.one_hot`` (a new last axis of length ``num_classes``; ``None``
    or ``-1`` means ``max(labels) + 1``), but the result is the namespace's default **floating**
    dtype rather than int64: one-hot rows are meant as probability targets of a loss, which
    needs them floating (and multiplies them with floating values), so this saves a cast.
    Pass ``dtype`` for another dtype (e.g. ``torch.int64`` for PyTorch's result).

    Parameters
    ----------
    labels : int array of any shape
        Class indices in ``[0, num_classes)``; others raise ValueError.
    num_classes : int, optional
        Length :math:`C` of the new axis; default ``max(labels) + 1``.
    dtype : dtype, optional
        Of the labels' namespace; default its default real floating dtype (float64 for NumPy,
        normally float32 for PyTorch).

    Returns
    -------
    array of shape labels.shape + (n_classes,)
        1 at each label's class, 0 elsewhere.

    Examples
    --------
    >>> import numpy as np
    >>> one_hot(np.array([0, 2]))
    array([[1., 0., 0.],
           [0., 0., 1.]])
    """
    if num_classes == -1 and not isinstance(num_classes, bool):
        num_classes = None
    xp, labels, num_classes = _labels_and_classes("labels", labels, num_classes)
    dtype = _default_float(xp, labels) if dtype is None else dtype
    return xp.astype(onehot_mask(labels, num_classes, xp, like=labels), dtype)


def smooth_labels(
    targets: ArrayLike, /, *, num_classes: int | None = None, smoothing: float = 0.1, dtype: DType | None = None
) -> Array:
    r"""Label-smoothed probability targets, as PyTorch's ``label_smoothing``.

    .. math::

        \tilde t_{n,c} = (1 - \varepsilon)\, t_{n,c} + \frac{\varepsilon}{C}

    with :math:`t` the one-hot encoding of integer targets, or the given probabilities. The
    softmax cross-entropy against :math:`\tilde t` equals
    ``torch.nn.functional.cross_entropy(x, y, label_smoothing=eps)`` (without class weights).

    ``num_classes`` is **required for integer targets**: inferring :math:`C` from the batch's
    largest label would silently change both :math:`\varepsilon / C` and the output's width
    whenever a batch lacks the last class.

    Parameters
    ----------
    targets : int array of shape (n_samples,) or float array of shape (n_samples, n_classes)
        Class indices in ``[0, num_classes)``, or probabilities with the class axis last (in
        [0, 1], each row summing to 1).
    num_classes : int
        Number of classes :math:`C`. Required for integer targets; for probability targets it
        may be given, and must then equal ``targets.shape[-1]``.
    smoothing : float, default 0.1
        :math:`\varepsilon` in [0, 1].
    dtype : dtype, optional
        Floating dtype of the result, of the targets' namespace (e.g. ``torch.float64`` to
        match float64 logits). Default: the targets' dtype for probabilities, the namespace's
        default floating dtype (float64 for NumPy, normally float32 for PyTorch) for integers.

    Returns
    -------
    array of shape (n_samples, n_classes)
        The targets' array type, in ``dtype`` (half precision is computed in float32).

    Examples
    --------
    >>> import numpy as np
    >>> smooth_labels(np.array([0, 2]), num_classes=3, smoothing=0.3)
    array([[0.8, 0.1, 0.1],
           [0.1, 0.1, 0.8]])
    """
    smoothing = check_number("smoothing", smoothing, low=0.0, high=1.0)
    xp = get_namespace(targets)
    targets = as_namespace_array(targets, xp, name="targets")
    if dtype is not None and not xp.isdtype(dtype, "real floating"):
        name = dtype.__name__ if isinstance(dtype, type) else dtype
        raise TypeError(f"`dtype` must be a real floating-point dtype; got {name}")
    if is_integer(xp, targets):
        if num_classes is None:
            raise ValueError(
                "`num_classes` must be given for integer targets (inferring it from the largest "
                "label in the batch would change the smoothing); got None"
            )
        xp, labels, num_classes = _labels_and_classes("targets", targets, num_classes)
        out_dtype = _default_float(xp, labels) if dtype is None else dtype
        hot = xp.astype(onehot_mask(labels, num_classes, xp, like=labels), compute_dtype(xp, out_dtype))
        return xp.astype(hot * (1.0 - smoothing) + smoothing / num_classes, out_dtype, copy=False)
    if not is_real_floating(xp, targets):
        raise TypeError(
            f"`targets` must be integer class indices or floating-point class probabilities; got dtype {targets.dtype}"
        )
    if targets.ndim < 1:
        raise ValueError(f"`targets` must have at least 1 dimension(s); got shape {tuple(targets.shape)}")
    check_not_empty("targets", targets)
    width = int(targets.shape[-1])
    if num_classes is not None:
        num_classes = check_integer_option("num_classes", num_classes, low=1)
        if num_classes != width:
            raise ValueError(
                f"`num_classes` must equal the probability targets' last axis ({width}); got {num_classes}"
            )
    check_in_unit_interval("targets", targets, xp)
    check_rows_sum_to_one("targets", targets, xp)
    out_dtype = targets.dtype if dtype is None else dtype
    t = xp.astype(targets, compute_dtype(xp, out_dtype), copy=False)
    return xp.astype(t * (1.0 - smoothing) + smoothing / width, out_dtype, copy=False)
