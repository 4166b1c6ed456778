"""Option parsing and the ``crossentropy bench`` command."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..._tools.progress import step_progress
from .._options import positive_int
from ._config import (
    DEFAULT_OUT,
    DEFAULT_REPEAT,
    DTYPES,
    FULL_SHAPES,
    GENERIC_REPEAT,
    QUICK_REPEAT,
    QUICK_SHAPES,
    BenchConfig,
    MissingDependencyError,
    _shapes_text,
)
from ._report import _print_tables, write_outputs
from ._run import _count_steps, run_benchmark


def parse_shapes(text: str) -> tuple[tuple[int, int], ...]:
    """Parse ``"4096x32000,64x1000"`` into ``((4096, 32000), (64, 1000))``; duplicates are dropped.

    Parameters
    ----------
    text : str
        Comma-separated ``NxV`` sizes with positive integers (``x``, ``X`` or ``×``).

    Returns
    -------
    tuple of (int, int)

    Raises
    ------
    argparse.ArgumentTypeError
        On an empty list or an entry that is not ``NxV`` with positive integers.
    """
    shapes: list[tuple[int, int]] = []
    for entry in text.split(","):
        parts = entry.strip().lower().replace("×", "x").split("x")
        if len(parts) != 2 or not all(part.strip().isdigit() and int(part) > 0 for part in parts):
            raise argparse.ArgumentTypeError(
                f"must be comma-separated NxV sizes with positive integers, e.g. 4096x32000; got {entry.strip()!r}"
            )
        shape = (int(parts[0]), int(parts[1]))
        if shape not in shapes:
            shapes.append(shape)
    return tuple(shapes)


def parse_dtypes(text: str) -> tuple[str, ...]:
    """Parse ``"float32,bfloat16"`` into ``("float32", "bfloat16")``; duplicates are dropped.

    Raises
    ------
    argparse.ArgumentTypeError
        On an empty list or a dtype outside :data:`DTYPES`.
    """
    dtypes: list[str] = []
    for entry in text.split(","):
        name = entry.strip().lower()
        if name not in DTYPES:
            choices = ", ".join(DTYPES)
            raise argparse.ArgumentTypeError(f"must be comma-separated among {choices}; got {entry.strip()!r}")
        if name not in dtypes:
            dtypes.append(name)
    return tuple(dtypes)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``crossentropy bench`` to ``parser``."""
    parser.add_argument(
        "--quick", action="store_true", help=f"tiny shapes ({_shapes_text(QUICK_SHAPES)}), {QUICK_REPEAT} repetitions"
    )
    parser.add_argument(
        "--shapes",
        type=parse_shapes,
        metavar="NxV,...",
        help=f"logits shapes (default: {_shapes_text(FULL_SHAPES)})",
    )
    parser.add_argument(
        "--dtypes", type=parse_dtypes, metavar="DTYPE,...", help=f"logits dtypes (default: {','.join(DTYPES)})"
    )
    parser.add_argument(
        "--repeat",
        type=positive_int,
        metavar="K",
        help=f"timed repetitions per case after a warm-up (default: {DEFAULT_REPEAT}; "
        f"the generic path runs at most {GENERIC_REPEAT})",
    )
    parser.add_argument("--no-generic", action="store_true", help="skip the generic array-API path (the slow one)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(DEFAULT_OUT),
        metavar="DIR",
        help=f"where the CSV, PNG and markdown files go (default: ./{DEFAULT_OUT}/)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The :class:`BenchConfig` of parsed ``crossentropy bench`` options."""
    config = BenchConfig.quick() if args.quick else BenchConfig()
    changes: dict[str, Any] = {"generic": not args.no_generic}
    if args.shapes is not None:
        changes["shapes"] = args.shapes
    if args.dtypes is not None:
        changes["dtypes"] = args.dtypes
    if args.repeat is not None:
        changes["repeat"] = args.repeat
    return replace(config, **changes)


def command(args: argparse.Namespace) -> int:
    """Run ``crossentropy bench`` with parsed options; returns the exit code.

    Missing optional dependencies and an unusable ``--out`` are reported before anything is
    measured, as one line on stderr with exit code 2.
    """
    try:
        _require("torch", "PyTorch")
        _require("matplotlib", "matplotlib")
        out_dir = _prepare_out_dir(args.out)
    except (MissingDependencyError, ValueError) as error:
        print(f"crossentropy bench: error: {error}", file=sys.stderr)
        return 2
    config = config_from_args(args)
    with step_progress(_count_steps(config), prefix="bench") as progress:
        result = run_benchmark(config, progress=progress)
    write_outputs(result, out_dir)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        _print_tables(result)
    for failure in result.failures():
        print(f"crossentropy bench: warning: failed: {failure}", file=sys.stderr)
    return 0


def _require(module: str, name: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(
            f"{name} is not installed; `crossentropy bench` needs it: pip install 'crossentropy[bench]'"
        )


def _prepare_out_dir(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise ValueError(f"`--out` must be a directory; got the file {str(out)!r}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"`--out` cannot be created: {error.strerror}; got {str(out)!r}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"`--out` must be a writable directory; got {str(out)!r}")
    return out
