"""crossentropy: the whole cross-entropy family, correct and stable, on any array library.

Information measures (:func:`entropy`, :func:`cross_entropy`, :func:`kl_divergence`,
:func:`js_divergence`), classification losses on logits and probabilities with their analytic
gradients, noise-robust losses, penalties, target helpers and evaluation metrics. Every function
accepts NumPy, PyTorch, JAX or CuPy arrays and returns the same kind of array.

>>> import numpy as np
>>> import crossentropy as ce
>>> p, q = np.array([0.9, 0.1]), np.array([0.7, 0.3])
>>> round(float(ce.cross_entropy(p, q)), 4)  # H(P, Q) = H(P) + KL(P || Q)
0.4414
"""

from ._inputs import ProbabilitiesAsLogitsWarning
from ._validation import checks_disabled
from .distillation import distillation_loss
from .information import Decomposition, cross_entropy, decompose, entropy, js_divergence, kl_divergence
from .losses import (
    LossStats,
    binary_cross_entropy,
    nll_loss,
    poly1_cross_entropy,
    sigmoid_cross_entropy,
    sigmoid_cross_entropy_with_grad,
    sigmoid_focal_loss,
    softmax_cross_entropy,
    softmax_cross_entropy_with_grad,
    softmax_focal_loss,
)
from .metrics import (
    BrierDecomposition,
    ReliabilityCurve,
    brier_score,
    brier_score_decomposition,
    classwise_calibration_error,
    d2_brier_score,
    d2_log_loss_score,
    expected_calibration_error,
    fit_temperature,
    log_loss,
    perplexity,
    reliability_curve,
    top_k_accuracy,
)
from .penalties import demographic_parity_gap, neighbor_js_penalty, z_loss
from .robust import (
    backward_corrected_cross_entropy,
    forward_corrected_cross_entropy,
    generalized_cross_entropy,
    symmetric_cross_entropy,
)
from .special import log_sigmoid, log_softmax, logsumexp, softmax
from .weights import class_weights, one_hot, smooth_labels

__version__ = "0.1.0"

__all__ = [
    "BrierDecomposition",
    "Decomposition",
    "LossStats",
    "ProbabilitiesAsLogitsWarning",
    "ReliabilityCurve",
    "__version__",
    "backward_corrected_cross_entropy",
    "binary_cross_entropy",
    "brier_score",
    "brier_score_decomposition",
    "checks_disabled",
    "class_weights",
    "classwise_calibration_error",
    "cross_entropy",
    "d2_brier_score",
    "d2_log_loss_score",
    "decompose",
    "demographic_parity_gap",
    "distillation_loss",
    "entropy",
    "expected_calibration_error",
    "fit_temperature",
    "forward_corrected_cross_entropy",
    "generalized_cross_entropy",
    "js_divergence",
    "kl_divergence",
    "log_loss",
    "log_sigmoid",
    "log_softmax",
    "logsumexp",
    "neighbor_js_penalty",
    "nll_loss",
    "one_hot",
    "perplexity",
    "poly1_cross_entropy",
    "reliability_curve",
    "sigmoid_cross_entropy",
    "sigmoid_cross_entropy_with_grad",
    "sigmoid_focal_loss",
    "smooth_labels",
    "softmax",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_grad",
    "softmax_focal_loss",
    "symmetric_cross_entropy",
    "top_k_accuracy",
    "z_loss",
]
