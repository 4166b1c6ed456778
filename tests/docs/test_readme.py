"""The README's Python examples run as written, and their commented figures hold."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_blocks_run_and_match_their_comments():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert blocks, "the README has no Python example"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    ce = namespace["ce"]
    decomposition = ce.decompose(namespace["p"], namespace["q"])
    np.testing.assert_allclose([float(v) for v in decomposition], [0.4414, 0.3251, 0.1163], atol=5e-5)
    loss, dlogits = namespace["loss"], namespace["dlogits"]
    probs = ce.softmax(namespace["logits"])
    np.testing.assert_allclose(dlogits, (probs - np.eye(3)[namespace["labels"]]) / 2, rtol=1e-12)
    assert float(loss) > 0
    # Training language models: the micro-batches with the step's normalizer sum to the whole batch's gradient.
    head, lm_loss, accumulated = namespace["head"], namespace["lm_loss"], namespace["accumulated"]
    (whole,) = torch.autograd.grad(lm_loss, head.weight)
    torch.testing.assert_close(accumulated, whole, rtol=1e-5, atol=1e-7)
    assert 0 <= float(namespace["accuracy"]) <= 1
    assert float(namespace["kl"].detach()) > 0
