"""Settings for every test session, the doctests of ``src/`` included (``tests/conftest.py`` has the rest).

Without a CUDA GPU the Triton kernels run in Triton's interpreter, on CPU tensors (exact and slow).
``triton.jit`` reads ``TRITON_INTERPRET`` when a kernel is defined, so it is set here, before any
test or doctest imports them. Without the triton package the Triton backend's modules are not
collected for their doctests (the tests that need it skip with that reason).
"""

from __future__ import annotations

import importlib.util
import os


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


if not _cuda_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

collect_ignore_glob = [] if importlib.util.find_spec("triton") else ["src/crossentropy/kernels/triton/*.py"]
