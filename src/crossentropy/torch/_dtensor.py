r"""DTensor inputs (``torch.distributed.tensor``) for :func:`~crossentropy.torch.cross_entropy` and
:func:`~crossentropy.torch.linear_cross_entropy`.

:func:`cross_entropy_dtensor` is what :func:`crossentropy.torch.cross_entropy` runs when ``input``
or ``target`` is a DTensor; :func:`linear_cross_entropy_dtensor` is what
:func:`crossentropy.torch.linear_cross_entropy` runs when ``input`` or ``linear_weight`` is one.
Every rank of the device mesh must make the call, with the same options.

**cross_entropy** (logits ``input`` of shape (C,), (N, C) or (N, C, d1, ...), classes on dimension 1):

======================================  ==========================================================
``input``'s placements                  what runs, and the result
======================================  ==========================================================
``Shard(1)`` (the class dimension;      the vocabulary-parallel loss, as PyTorch's
``Shard(0)`` of a (C,) input), 1-D      ``loss_parallel()``: each rank's slice of the classes goes
mesh                                    to :func:`~crossentropy.torch.vocab_parallel_cross_entropy`
                                        (two all-reduces of O(N) numbers); the result is a
                                        ``Replicate`` DTensor for every reduction (``"none"``
                                        too), as ``loss_parallel()`` returns; the gradient of
                                        ``input`` is ``Shard(1)``, like ``input``. Slices may be
                                        uneven (as DTensor makes them); ``target`` is a plain tensor
                                        or a ``Replicate`` DTensor of the whole batch. Options:
                                        ``ignore_index``, ``label_smoothing``, ``z_loss``,
                                        ``reduction``, and ``weight`` (each rank takes its slice),
                                        ``softcap``, ``sample_weight`` where
                                        ``vocab_parallel_cross_entropy`` takes them (else
                                        ``NotImplementedError``; weights requiring a gradient too).
                                        Probability targets raise ``NotImplementedError``, and so
                                        do label smoothing and ``softcap`` when the layout leaves a
                                        rank without a class (4 classes over 3 ranks: 2, 2, 0)
``Shard(d)``, another dimension         each rank computes its part of the batch (all options);
(batch or spatial), 1-D mesh            ``target`` (and ``sample_weight``) must be DTensors sharded
                                        the same way. ``"none"``: the losses as a DTensor sharded on
                                        the same batch dimension; ``"sum"`` and ``"mean"``: one
                                        all-reduce, a ``Replicate`` scalar, the exact global mean
                                        (sum over the ranks over their summed denominators)
``Replicate`` (any mesh)                each rank computes the whole loss from its copy; the
                                        result is ``Replicate``
``Partial``, 1-D mesh                   redistributed to ``Replicate`` first
======================================  ==========================================================

Other layouts (a class dimension sharded on a mesh of several dimensions, ``_StridedShard``)
raise ``NotImplementedError``, as does ``inplace=True``. The loss has ``input``'s dtype.

``normalizer`` (``reduction="mean"`` only; a number, a 0-d tensor or a DTensor of one number)
divides the global (weighted) sum on every layout: the vocabulary-parallel path passes it on, the
batch-sharded one all-reduces each rank's sum over it. ``return_stats=True`` returns ``(loss,
LossStats)`` whose ``lse``, ``entropy`` and ``accuracy`` are DTensors of the target's global shape,
laid out as the per-token losses of ``"none"`` would be: ``Replicate`` for logits sharded on the class
dimension (the vocabulary-parallel path computes them over the whole vocabulary, in its two
all-reduces), sharded like the batch for a batch-sharded ``input``, ``Replicate`` for a replicated one.
``lse`` and ``entropy`` are differentiable; gradients reach ``input`` in its own layout.

**linear_cross_entropy** (``input`` (..., H), ``linear_weight`` (V, H)):

- ``input`` a plain tensor, each rank's own tokens (data parallelism, FSDP2): a DTensor
  ``linear_weight`` (``Shard(0)`` as FSDP2 shards it, or any placement on any mesh) and
  ``linear_bias`` are gathered with ``full_tensor()``, differentiably: an all-gather in the
  forward pass, a reduce-scatter of the gradient (an all-reduce for a replicated weight) in the
  backward pass. The result is this rank's loss over its own tokens, a plain tensor, and the
  weight's gradient, a DTensor with the weight's placements, is the **sum** over the ranks of the
  gradients of their losses (divide the loss by the number of ranks, or pass the mean's
  denominator summed over ranks, for an average as DDP gives).
- ``input`` a ``Replicate`` DTensor (the same tokens on every rank of a 1-D mesh) and
  ``linear_weight`` ``Shard(0)`` (tensor parallelism, ``ColwiseParallel``'s layout of the
  vocabulary): :func:`~crossentropy.torch.distributed.vocab_parallel_linear_cross_entropy` on
  the local shards, never gathering the weight or the logits. ``linear_bias`` and class
  ``weight`` may be ``Shard(0)`` DTensors, or plain/``Replicate`` ones of shape (V,), of which
  each rank takes its slice. The result is a ``Replicate`` DTensor (every reduction); the
  gradient of ``input`` is ``Replicate`` (the backward all-reduces it), that of the weight
  ``Shard(0)``. ``options``, ``accumulation_dtype``, ``filter_eps`` and probability targets are
  not supported there (``NotImplementedError``).
- ``input`` and ``linear_weight`` both ``Replicate``: computed on the local copies, a
  ``Replicate`` result.

``return_stats=True`` (in ``keywords``) gives ``(loss, LossStats)`` on every layout: with a plain
``input``, plain tensors of this rank's tokens; with a replicated DTensor ``input``, ``Replicate``
DTensors (over the whole vocabulary on the tensor-parallel path, from its two all-reduces).

A sharded DTensor ``input`` raises ``NotImplementedError``: for data parallelism pass each
rank's tokens as a plain tensor (``input.to_local()``).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.distributed as dist

from .._array import get_namespace
from .._typing import Reduction
from .._validation import check_class_indices, check_reduction, checks_values

try:  # a PyTorch build without torch.distributed has no DTensor
    if not dist.is_available():
        raise ImportError("torch.distributed is not available")
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset
except ImportError:  # pragma: no cover - only on such builds
    DTensor = None  # type: ignore[assignment,misc]
    TYPES: tuple[type, ...] = ()
else:
    TYPES = (DTensor,)

__all__ = ["TYPES", "cross_entropy_dtensor", "linear_cross_entropy_dtensor"]


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) of each rank's part of a replicated result. The backward is the identity:
    every rank starts its backward from the same incoming gradient of the replicated result, which
    is the gradient of its own part."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def _placements_text(placements: Any) -> str:
    return "(" + ", ".join(str(p) for p in placements) + ")"


def _replicated(placements: Any) -> bool:
    return all(p.is_replicate() for p in placements)


def _local(tensor: Any, name: str, mesh: Any, placements: tuple, layout: str) -> Any:
    """This rank's part of ``tensor`` laid out as ``placements`` on ``mesh``: a DTensor is
    redistributed there if it is laid out otherwise, a plain tensor is taken as replicated (and
    refused where the layout is sharded: it would be ambiguous)."""
    if tensor is None:
        return None
    if isinstance(tensor, DTensor):
        if tensor.device_mesh != mesh:
            raise ValueError(f"`{name}` is a DTensor on another device mesh than `input`'s")
        if tuple(tensor.placements) != tuple(placements):
            tensor = tensor.redistribute(mesh, placements)
        return tensor.to_local()
    if _replicated(placements):
        return tensor
    raise ValueError(
        f"`{name}` must be a DTensor laid out as {_placements_text(placements)} when `input` is {layout}: "
        f"a plain tensor is ambiguous (the whole `{name}` or this rank's part); got a plain tensor"
    )


def _result(loss: torch.Tensor, mesh: Any, placements: tuple, shape: tuple[int, ...] | None = None) -> Any:
    """``loss`` as a DTensor (``shape``: the global shape, for uneven shards)."""
    if shape is None:
        return DTensor.from_local(loss, mesh, placements, run_check=False)
    stride = torch.empty(shape, device="meta").stride()
    return DTensor.from_local(loss, mesh, placements, run_check=False, shape=torch.Size(shape), stride=stride)


def _stats_result(stats: Any, mesh: Any, placements: tuple, shape: tuple[int, ...] | None = None) -> Any:
    """A :class:`crossentropy.LossStats` of this rank's tensors as one of DTensors laid out as ``placements``."""
    return type(stats)(*(_result(t, mesh, placements, shape) for t in stats))


def _results(found: Any, mesh: Any, placements: tuple, shape: tuple[int, ...] | None = None) -> Any:
    """A loss, or ``(loss, LossStats)`` (``return_stats``), as DTensors laid out alike (per-token losses and
    statistics: ``shape`` is their global shape)."""
    if isinstance(found, tuple):
        loss, stats = found
        return _result(loss, mesh, placements, shape), _stats_result(stats, mesh, placements, shape)
    return _result(found, mesh, placements, shape)


def _class_offset(tensor: Any, dim: int) -> int:
    """The global index of this rank's first entry of ``tensor`` along ``dim`` (torch.chunk's layout,
    uneven shards included), after checking that the local shard has the size that layout gives."""
    local_shape, offset = compute_local_shape_and_global_offset(tensor.shape, tensor.device_mesh, tensor.placements)
    if tuple(local_shape) != tuple(tensor.to_local().shape):
        raise ValueError(
            f"the local shard of shape {tuple(tensor.to_local().shape)} is not the one DTensor's layout gives "
            f"for the global shape {tuple(tensor.shape)} and placements {_placements_text(tensor.placements)}, "
            f"{tuple(local_shape)}"
        )
    return int(offset[dim])


def _vocabulary_slice(vector: Any, name: str, mesh: Any, vocab_start: int, n_local: int) -> torch.Tensor:
    """This rank's slice ``[vocab_start, vocab_start + n_local)`` of a vector over the vocabulary (class
    weights, a bias): a DTensor sharded as ``Shard(0)`` gives its local shard; a replicated one
    (or a plain tensor) its slice, whose gradient, zero outside the slice on each rank, is summed
    over the ranks (``Partial``)."""
    if isinstance(vector, DTensor):
        if vector.device_mesh != mesh:
            raise ValueError(f"`{name}` is a DTensor on another device mesh than `input`'s")
        if tuple(vector.placements) == (Shard(0),):
            if vector.to_local().shape[0] != n_local:
                raise ValueError(f"`{name}` is sharded unlike the classes of this rank ({n_local} of them)")
            return vector.to_local()
        vector = vector.redistribute(mesh, (Replicate(),)).to_local(grad_placements=[Partial()])
    return vector[vocab_start : vocab_start + n_local]


# ---------------------------------------------------------------------------------------------
# cross_entropy
# ---------------------------------------------------------------------------------------------


def cross_entropy_dtensor(
    input: Any,
    target: Any,
    weight: Any = None,
    *,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    sample_weight: Any = None,
    inplace: bool = False,
    normalizer: Any = None,
    return_stats: bool = False,
) -> Any:
    """:func:`crossentropy.torch.cross_entropy` of a DTensor ``input`` (see the module's table); with
    ``return_stats``, ``(loss, LossStats)`` whose statistics are DTensors laid out as the module's docstring
    says."""
    if not isinstance(input, DTensor):
        raise TypeError(
            "`target` is a DTensor but `input` is not: pass `input` as a DTensor on the same device mesh, "
            "or `target.full_tensor()`"
        )
    if inplace:
        raise NotImplementedError("`inplace=True` is not supported for a DTensor `input`")
    reduction = check_reduction(reduction)
    keywords = {
        "ignore_index": ignore_index,
        "label_smoothing": label_smoothing,
        "z_loss": z_loss,
        "softcap": softcap,
        "normalizer": normalizer,
        "return_stats": return_stats,
    }
    mesh, placements = input.device_mesh, tuple(input.placements)
    if normalizer is not None and reduction != "mean":  # on every rank alike, before any collective
        raise ValueError(f"`normalizer` replaces the mean's denominator: it needs reduction='mean'; got {reduction!r}")
    if normalizer is not None:  # a number, a plain 0-d tensor or a DTensor (then gathered: one number)
        keywords["normalizer"] = _local(normalizer, "normalizer", mesh, (Replicate(),) * mesh.ndim, "any layout")
    if _replicated(placements):
        return _replicated_cross_entropy(input, target, weight, sample_weight, reduction, keywords)
    if mesh.ndim != 1:
        raise NotImplementedError(
            f"a DTensor `input` on a device mesh of {mesh.ndim} dimensions is supported only when replicated; "
            f"got placements {_placements_text(placements)}"
        )
    (placement,) = placements
    if placement.is_partial():
        replicate = (Replicate(),)
        return _replicated_cross_entropy(
            input.redistribute(mesh, replicate), target, weight, sample_weight, reduction, keywords
        )
    if type(placement) is not Shard:
        raise NotImplementedError(f"a DTensor `input` with placement {placement} is not supported")
    class_dim = 1 if input.ndim >= 2 else 0
    dim = placement.dim % input.ndim
    if dim == class_dim:
        return _vocabulary_parallel(input, target, weight, sample_weight, reduction, class_dim, keywords)
    return _batch_parallel(input, target, weight, sample_weight, reduction, dim, keywords)


def _replicated_cross_entropy(input, target, weight, sample_weight, reduction, keywords) -> Any:
    from .functional import cross_entropy

    mesh, placements = input.device_mesh, tuple(input.placements)
    layout = "replicated"
    loss = cross_entropy(
        input.to_local(),
        _local(target, "target", mesh, placements, layout),
        _local(weight, "weight", mesh, placements, layout),
        reduction=reduction,
        sample_weight=_local(sample_weight, "sample_weight", mesh, placements, layout),
        **keywords,
    )
    return _results(loss, mesh, placements)


def _vocabulary_parallel(input, target, weight, sample_weight, reduction, class_dim, keywords) -> Any:
    from .distributed import vocab_parallel_cross_entropy

    mesh = input.device_mesh
    supported = inspect.signature(vocab_parallel_cross_entropy).parameters
    given = {"weight": weight, "softcap": keywords["softcap"], "sample_weight": sample_weight}
    for name, value in given.items():
        if value is not None and name not in supported:
            raise NotImplementedError(
                f"`{name}` is not supported with logits sharded on the class dimension (the vocabulary-parallel "
                f"path, vocab_parallel_cross_entropy, has no `{name}`); gather them with `input.full_tensor()` "
                "or shard the batch instead"
            )
    replicate = (Replicate(),)
    layout = f"sharded on the class dimension ({_placements_text(input.placements)})"
    local_target = _local(target, "target", mesh, replicate, layout)
    if local_target.dtype.is_floating_point:
        raise NotImplementedError(
            "probability targets are not supported with logits sharded on the class dimension (as with "
            "PyTorch's loss_parallel()); pass class indices"
        )
    batch_shape = tuple(input.shape[:class_dim]) + tuple(input.shape[class_dim + 1 :])
    if tuple(local_target.shape) != batch_shape:
        raise ValueError(
            f"`target` must have shape {batch_shape} (the input's without the class dimension); "
            f"got {tuple(local_target.shape)}"
        )
    n_classes = input.shape[class_dim]
    ignore_index = keywords["ignore_index"]
    if checks_values(local_target):
        check_class_indices("target", local_target, get_namespace(local_target), n_classes, ignore_index)
    vocab_start = _class_offset(input, class_dim)
    n_local = input.to_local().shape[class_dim]
    extras = {}
    if weight is not None:  # this rank's slice of the class weights, as vocab_parallel_cross_entropy takes
        extras["weight"] = _vocabulary_slice(weight, "weight", mesh, vocab_start, n_local)
    if keywords["softcap"] is not None:
        extras["softcap"] = keywords["softcap"]
    if sample_weight is not None:
        extras["sample_weight"] = _local(sample_weight, "sample_weight", mesh, replicate, layout)
    for name in ("weight", "sample_weight"):
        if torch.is_grad_enabled() and name in extras and extras[name].requires_grad:
            raise NotImplementedError(
                f"the vocabulary-parallel path does not differentiate `{name}`; detach it or gather the logits"
            )
    # torch.chunk's layout leaves the last ranks without a class when C is small (4 over 3 ranks: 2, 2, 0); every
    # rank tells from the shapes alone, so that all raise together
    if -(-n_classes // mesh.size()) * (mesh.size() - 1) >= n_classes > 0 and (
        keywords["label_smoothing"] > 0 or keywords["softcap"] is not None
    ):
        raise NotImplementedError(
            "label smoothing and `softcap` with logits sharded on the class dimension need a class on every rank; "
            f"{n_classes} classes over {mesh.size()} ranks leave one without"
        )
    logits = input.to_local().movedim(class_dim, -1)
    if n_local == 0:  # one class of -inf, weighing 0, on the ranks without a class
        logits = torch.cat([logits, logits.new_full((*logits.shape[:-1], 1), -torch.inf)], dim=-1)
        if "weight" in extras:
            extras["weight"] = torch.cat([extras["weight"], extras["weight"].new_zeros(1)])
    loss = vocab_parallel_cross_entropy(
        logits,
        local_target,
        vocab_start=vocab_start,
        group=mesh.get_group(),
        ignore_index=ignore_index,
        label_smoothing=keywords["label_smoothing"],
        z_loss=keywords["z_loss"],
        reduction=reduction,
        normalizer=keywords["normalizer"],
        return_stats=keywords["return_stats"],
        **extras,
    )
    if keywords["return_stats"]:
        loss, stats = loss
        return _result(loss.to(input.dtype), mesh, replicate), _stats_result(stats, mesh, replicate)
    return _result(loss.to(input.dtype), mesh, replicate)


def _batch_parallel(input, target, weight, sample_weight, reduction, dim, keywords) -> Any:
    from .functional import cross_entropy

    mesh = input.device_mesh
    class_dim = 1 if input.ndim >= 2 else 0
    batch_dim = dim if dim < class_dim else dim - 1  # the dimension of the losses sharded like `dim`
    layout = f"sharded on dimension {dim}"
    probabilities = target.dtype.is_floating_point if isinstance(target, torch.Tensor) else False
    target_placement = (Shard(dim),) if probabilities else (Shard(batch_dim),)
    local_target = _local(target, "target", mesh, target_placement, layout)
    local_weight = _local(weight, "weight", mesh, (Replicate(),), layout)
    local_sample = _local(sample_weight, "sample_weight", mesh, (Shard(batch_dim),), layout)
    local_input = input.to_local()
    keywords = dict(keywords)
    normalizer, return_stats = keywords.pop("normalizer"), keywords["return_stats"]
    shape = tuple(input.shape[:class_dim]) + tuple(input.shape[class_dim + 1 :])  # the losses' and statistics'
    sharded = (Shard(batch_dim),)
    if reduction == "none":
        losses = cross_entropy(
            local_input, local_target, local_weight, reduction="none", sample_weight=local_sample, **keywords
        )
        return _results(losses, mesh, sharded, shape)
    # each rank's sum, or with a normalizer its sum over the normalizer (the ranks' add up to the global mean)
    own = {"reduction": "sum"} if normalizer is None else {"reduction": "mean", "normalizer": normalizer}
    total = cross_entropy(local_input, local_target, local_weight, sample_weight=local_sample, **own, **keywords)
    stats = None
    if return_stats:
        total, stats = total
        stats = _stats_result(stats, mesh, sharded, shape)
    accumulation = torch.float64 if input.dtype == torch.float64 else torch.float32
    group = mesh.get_group()
    if reduction == "sum" or normalizer is not None:
        loss = _result(_SumOverRanks.apply(total.to(accumulation), group).to(input.dtype), mesh, (Replicate(),))
        return loss if stats is None else (loss, stats)
    denominator = _denominator(local_target, local_weight, local_sample, keywords["ignore_index"], probabilities)
    sums = _SumOverRanks.apply(torch.stack([total.to(accumulation), denominator.to(accumulation)]), group)
    count = sums[1]
    mean = sums[0] / torch.where(count > 0, count, torch.ones_like(count))  # 0 when every target is ignored
    loss = _result(mean.to(input.dtype), mesh, (Replicate(),))
    return loss if stats is None else (loss, stats)


def _denominator(target, weight, sample_weight, ignore_index, probabilities) -> torch.Tensor:
    """The mean's denominator of this rank's part, as :func:`crossentropy.torch.cross_entropy` divides by:
    :math:`\\sum_n s_n w_{y_n}` over the targets not ignored (index targets), :math:`\\sum_n s_n`
    (probability targets)."""
    if probabilities:
        batch = target.shape[:1] + target.shape[2:] if target.ndim >= 2 else ()
        if sample_weight is not None:
            return sample_weight.sum()
        return torch.tensor(float(torch.Size(batch).numel()), dtype=torch.float64, device=target.device)
    valid = target != ignore_index
    per_target = valid.to(torch.float64 if weight is not None and weight.dtype == torch.float64 else torch.float32)
    if weight is not None:
        per_target = per_target * weight[torch.where(valid, target, torch.zeros_like(target))]
    if sample_weight is not None:
        per_target = per_target * sample_weight
    return per_target.sum()


# ---------------------------------------------------------------------------------------------
# linear_cross_entropy
# ---------------------------------------------------------------------------------------------


def _gathered(tensor: Any) -> Any:
    """The whole of a DTensor as a plain tensor, differentiably, with a gradient summed over the ranks
    (an all-gather forward, a reduce-scatter backward for a sharded one); other values as they are."""
    if not isinstance(tensor, DTensor):
        return tensor
    return tensor.full_tensor(grad_placements=[Partial()] * tensor.device_mesh.ndim)


def linear_cross_entropy_dtensor(input: Any, linear_weight: Any, target: Any, **keywords: Any) -> Any:
    """:func:`crossentropy.torch.linear_cross_entropy` with DTensor ``input``, ``linear_weight`` or
    ``linear_bias`` (see the module's docstring); ``keywords`` are that function's keyword options."""
    if isinstance(input, DTensor):
        return _tensor_parallel_linear(input, linear_weight, target, keywords)
    from .linear import linear_cross_entropy

    # Each rank's own tokens (data parallelism): the whole weight, gathered differentiably.
    for name, tensor in (("target", target), ("sample_weight", keywords.get("sample_weight"))):
        if isinstance(tensor, DTensor):
            raise ValueError(
                f"`{name}` must be a plain tensor, this rank's own, when `input` is one (data parallelism); "
                "got a DTensor"
            )
    for name in ("linear_bias", "weight"):
        if name in keywords:
            keywords[name] = _gathered(keywords[name])
    return linear_cross_entropy(input, _gathered(linear_weight), target, **keywords)


_NOT_TENSOR_PARALLEL = ("options", "accumulation_dtype", "filter_eps")
_TENSOR_KEYWORDS = ("linear_bias", "weight", "sample_weight")


def _tensor_parallel_linear(input, linear_weight, target, keywords) -> Any:
    mesh, placements = input.device_mesh, tuple(input.placements)
    if not _replicated(placements):
        raise NotImplementedError(
            "a DTensor `input` must be replicated (tensor parallelism); got placements "
            f"{_placements_text(placements)}. For data parallelism pass each rank's own tokens as a plain tensor "
            "(`input.to_local()`)"
        )
    if not isinstance(linear_weight, DTensor):
        raise TypeError("`linear_weight` must be a DTensor on the mesh of `input` when `input` is a DTensor")
    if linear_weight.device_mesh != mesh:
        raise ValueError("`linear_weight` is a DTensor on another device mesh than `input`'s")
    layout = "replicated"
    keywords = dict(keywords)
    weight_placements = tuple(linear_weight.placements)
    if _replicated(weight_placements):
        from .linear import linear_cross_entropy

        for name in _TENSOR_KEYWORDS:
            if keywords.get(name) is not None:
                keywords[name] = _local(keywords[name], name, mesh, placements, layout)
        target = _local(target, "target", mesh, placements, layout)
        loss = linear_cross_entropy(input.to_local(), linear_weight.to_local(), target, **keywords)
        return _results(loss, mesh, placements)
    if mesh.ndim != 1 or weight_placements != (Shard(0),):
        raise NotImplementedError(
            "with a replicated DTensor `input`, `linear_weight` must be replicated or sharded by vocabulary rows "
            f"(Shard(0)) on a 1-D mesh; got placements {_placements_text(weight_placements)}"
        )
    return _vocabulary_parallel_linear(input, linear_weight, target, keywords)


def _vocabulary_parallel_linear(input, linear_weight, target, keywords) -> Any:
    from .distributed import vocab_parallel_linear_cross_entropy

    mesh = input.device_mesh
    keywords = dict(keywords)
    for name in _NOT_TENSOR_PARALLEL:
        if keywords.pop(name, None) is not None:
            raise NotImplementedError(
                f"`{name}` is not supported with `linear_weight` sharded by vocabulary (tensor parallelism, "
                "vocab_parallel_linear_cross_entropy)"
            )
    replicate = (Replicate(),)
    layout = "replicated"
    local_target = _local(target, "target", mesh, replicate, layout)
    if local_target.dtype.is_floating_point:
        raise NotImplementedError(
            "probability targets are not supported with `linear_weight` sharded by vocabulary; pass class indices"
        )
    local_weight = linear_weight.to_local()
    vocab_start = _class_offset(linear_weight, 0)
    for name in ("linear_bias", "weight"):
        if keywords.get(name) is not None:
            keywords[name] = _vocabulary_slice(keywords[name], name, mesh, vocab_start, local_weight.shape[0])
    keywords["sample_weight"] = _local(keywords.get("sample_weight"), "sample_weight", mesh, replicate, layout)
    if keywords.get("ignore_index") is None:
        keywords["ignore_index"] = -100
    loss = vocab_parallel_linear_cross_entropy(
        input.to_local(), local_weight, local_target, vocab_start=vocab_start, group=mesh.get_group(), **keywords
    )
    return _results(loss, mesh, replicate)
