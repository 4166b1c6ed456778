"""crossentropy: the whole cross-entropy family, correct and stable, on any array library."""

from ._inputs import ProbabilitiesAsLogitsWarning
from .special import log_sigmoid, log_softmax, logsumexp, softmax

__version__ = "0.1.0"

__all__ = [
    "ProbabilitiesAsLogitsWarning",
    "__version__",
    "log_sigmoid",
    "log_softmax",
    "logsumexp",
    "softmax",
]
