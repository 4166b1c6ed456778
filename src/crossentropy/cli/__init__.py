"""The ``crossentropy`` command.

Every sub-command prints a readable table (or JSON with ``--json``), exits 0 on success and 2
on bad input with a one-line message and no traceback; interrupted (Ctrl-C), it exits 130 with
the one line ``crossentropy COMMAND: interrupted``, leaving no half-written file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import bench, demo, gallery, score

__all__ = ["main"]

_EXAMPLES = """\
examples:
  crossentropy demo           train a classifier on bundled digits with cross-entropy, score it, plot it
  crossentropy demo --json    the same figures as JSON, for machines
  crossentropy score preds.csv --target label
                              log loss, perplexity, accuracy, Brier score and calibration of a prediction file
  crossentropy gallery --quick
                              the claims of cross-entropy as experiments on real data (seconds each)
  crossentropy bench --quick  the speed benchmark against PyTorch on tiny shapes (seconds)
  crossentropy bench          the full benchmark on this machine (several minutes)
"""


def _parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="crossentropy",
        description="Cross-entropy, KL divergence and classification losses, computed stably.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"crossentropy {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo_parser = commands.add_parser(
        "demo",
        help="train a classifier with cross-entropy on bundled digits, then score and plot it",
        description="Train softmax regression on the bundled handwritten digits (1,797 8x8 images, 10 classes) by "
        "full-batch gradient descent on the cross-entropy, showing the training and held-out loss per epoch; score "
        "the held-out predictions with the code of `crossentropy score`; and show the coin's H(P,Q) = H(P) + KL, "
        "the surprise -ln p and the gradient p - y. Writes predictions.csv, loss_curve.png and reliability.png "
        "into --out.",
        epilog=demo.EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_arguments(demo_parser)
    bench_parser = commands.add_parser(
        "bench",
        help="softmax cross-entropy speed against PyTorch and the memory-bandwidth floor",
        description="Time softmax cross-entropy (forward, forward+gradient) on this machine: the fused kernels, "
        "the generic array-API path and PyTorch, next to NumPy's memory bandwidth on the same array; also the "
        "forward pass's peak memory and the kernels' compilation time. Writes a CSV, a PNG chart and a markdown "
        "summary into --out.",
        epilog=bench.EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_arguments(bench_parser)
    score_parser = commands.add_parser(
        "score",
        help="log loss, perplexity, accuracy, Brier score and calibration of a prediction file",
        description="Score the predictions in a CSV, Parquet, .npy or .npz file of any size against their "
        "targets: log loss in nats and bits, perplexity, accuracy, Brier score, expected calibration error, "
        "mean predicted entropy and a per-class table. Bad input stops with exit code 2 and names the file, "
        "row and column.",
        epilog=score.EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    score.add_arguments(score_parser)
    gallery_parser = commands.add_parser(
        "gallery",
        help="the claims of cross-entropy as runnable experiments on real data",
        description="Run the gallery's experiments: each prints its tables, writes its figures into --out/NAME/ and "
        "returns its numbers; an index.html in --out shows them all.",
        epilog=gallery.EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gallery.add_arguments(gallery_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    # No OMP_WAIT_POLICY here any more: the kernels' threads no longer run on GNU OpenMP and sleep between
    # calls (crossentropy/kernels/numba/_threading.py), so nothing spins to take pyarrow's and BLAS's cores.
    commands = {"demo": demo.command, "bench": bench.command, "score": score.command, "gallery": gallery.command}
    if args.command not in commands:
        parser.error(f"unknown command {args.command!r}")  # argparse exits with code 2
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        # Ctrl-C: one line, no traceback, and the shell's code for SIGINT (128 + 2). Output files are
        # written atomically, so none is left half-written.
        print(f"crossentropy {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
