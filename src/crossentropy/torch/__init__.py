"""The PyTorch layer: drop-in losses for ``torch.nn.functional`` and ``torch.nn``, faster on the CPU.

``import crossentropy.torch as cet`` and replace ``F.cross_entropy`` by ``cet.cross_entropy``
(or ``nn.CrossEntropyLoss`` by ``cet.CrossEntropyLoss``): same arguments, same results, with
keyword extras (z-loss, soft-capping, sample weights, label smoothing for the sigmoid loss) and
the library's other losses in PyTorch's layout. See :mod:`crossentropy.torch.functional`.
"""

from __future__ import annotations

from ..losses import LossStats
from .distillation import distillation_loss, linear_distillation_loss
from .distributed import vocab_parallel_cross_entropy, vocab_parallel_linear_cross_entropy
from .functional import (
    backward_corrected_cross_entropy,
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    forward_corrected_cross_entropy,
    generalized_cross_entropy,
    nll_loss,
    poly1_cross_entropy,
    sigmoid_focal_loss,
    softmax_focal_loss,
    symmetric_cross_entropy,
)
from .linear import linear_cross_entropy
from .modules import (
    BackwardCorrectedCrossEntropyLoss,
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    ForwardCorrectedCrossEntropyLoss,
    GeneralizedCrossEntropyLoss,
    LinearCrossEntropyLoss,
    NLLLoss,
    Poly1CrossEntropyLoss,
    SigmoidFocalLoss,
    SoftmaxFocalLoss,
    SymmetricCrossEntropyLoss,
)

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "BackwardCorrectedCrossEntropyLoss",
    "CrossEntropyLoss",
    "ForwardCorrectedCrossEntropyLoss",
    "GeneralizedCrossEntropyLoss",
    "LinearCrossEntropyLoss",
    "LossStats",
    "NLLLoss",
    "Poly1CrossEntropyLoss",
    "SigmoidFocalLoss",
    "SoftmaxFocalLoss",
    "SymmetricCrossEntropyLoss",
    "backward_corrected_cross_entropy",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "distillation_loss",
    "forward_corrected_cross_entropy",
    "generalized_cross_entropy",
    "linear_cross_entropy",
    "linear_distillation_loss",
    "nll_loss",
    "poly1_cross_entropy",
    "sigmoid_focal_loss",
    "softmax_focal_loss",
    "symmetric_cross_entropy",
    "vocab_parallel_cross_entropy",
    "vocab_parallel_linear_cross_entropy",
]
