"""Fixtures of the torch layer's tests."""

from __future__ import annotations

import pytest
import torch.distributed as dist

from tests._support import free_port


@pytest.fixture
def one_rank_group():
    """A gloo process group of this process alone, for checks that need one but no other rank."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()
