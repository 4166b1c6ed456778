"""Test-session settings and the ``tol`` fixture.

The helpers themselves live in ``_support.py``; the session-scoped ``tol`` fixture hands them to
tests that prefer a fixture (it works inside hypothesis tests, where function-scoped fixtures
do not).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests._support import (
    TORCH_INSTALLED,
    assert_close,
    assert_same_kind,
    result_dtype_name,
    to_numpy,
    tolerance,
    torch,
)

if TORCH_INSTALLED:  # tests/core runs without PyTorch
    # The tests run thousands of tiny tensor ops: one intra-op thread avoids thread start-up and
    # oversubscription costs that dominate at this size (it does not change any result checked here).
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tol():
    """Namespace of the helpers of ``_support`` (usable from hypothesis tests)."""
    return SimpleNamespace(
        tolerance=tolerance,
        to_numpy=to_numpy,
        assert_close=assert_close,
        assert_same_kind=assert_same_kind,
        result_dtype_name=result_dtype_name,
    )
