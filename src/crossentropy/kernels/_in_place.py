"""The rules of writing the softmax gradient over the logits (``out=logits``; ``inplace=True`` in the torch layer).

They depend on where the logits live, not on the path that computes (kernels or reference), so
that switching the kernels off never changes which calls are accepted.
"""

from __future__ import annotations

from typing import Any

IN_PLACE = "writing the gradient over the logits (`out=logits`; `inplace=True` in crossentropy.torch)"


def check_softmax_in_place(
    *,
    contiguous: bool,
    dtype: Any,
    index_targets: bool,
    weighted_smoothing: bool,
    cap: float | None,
    on_host: bool = True,
) -> None:
    """Raise unless the softmax gradient can overwrite the logits: the rules of ``out=logits``.

    Everywhere, the logits must be writeable and C-contiguous (``contiguous``) with the class
    axis last. In host memory (``on_host``: the CPU kernels' inputs) also: with index targets the
    CPU kernels read each logit once and write its gradient in its place, so float32/float64
    logits, and no option that reads the logits again, a soft-cap (whose derivative needs the
    logits in the last pass) or label smoothing with class weights (a second pass); half
    precision keeps its exponentials in float32 rows and cannot either. On a device (the GPU
    kernels) every dtype and option can: each tile of a row is read before its gradient is
    written.

    Parameters
    ----------
    contiguous : bool
        Whether the logits are writeable and C-contiguous with the class axis last.
    dtype : dtype
        The logits' dtype, in any array library.
    index_targets : bool
        Whether the targets are class indices (not probabilities).
    weighted_smoothing : bool
        Whether label smoothing meets class weights.
    cap : float or None
        The soft-cap, None without one.
    on_host : bool, default True
        Whether the logits are in host memory (the CPU kernels' rules) or on a device.

    Raises
    ------
    ValueError
        Naming the rule the call breaks.
    """
    if not contiguous:
        raise ValueError(f"{IN_PLACE} needs writeable C-contiguous logits, with the class axis last")
    if not on_host:
        return
    if str(dtype).rsplit(".", 1)[-1] not in ("float32", "float64"):  # numpy's, torch.float32, array_api_strict's
        raise ValueError(f"{IN_PLACE} needs float32 or float64 logits; got {dtype}")
    if not index_targets:
        raise ValueError(f"{IN_PLACE} needs class-index targets, not probabilities")
    if cap is not None or weighted_smoothing:
        option = "`softcap`" if cap is not None else "label smoothing with class weights"
        raise ValueError(f"{IN_PLACE} cannot be used with {option}, which reads the logits twice")
