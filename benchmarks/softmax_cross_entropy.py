"""Softmax cross-entropy on this machine: the fused kernels against PyTorch and the memory-bandwidth floor.

Runs the full ``crossentropy bench`` (several minutes) and writes the CSV, the PNG chart and the
markdown summary into ``benchmarks/results/``, next to this script. Extra arguments are passed
on, e.g. ``--no-generic`` or ``--shapes 4096x32000``; see ``crossentropy bench --help`` and
``benchmarks/README.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from crossentropy.cli import main

RESULTS = Path(__file__).resolve().parent / "results"

if __name__ == "__main__":
    sys.exit(main(["bench", "--out", str(RESULTS), *sys.argv[1:]]))
