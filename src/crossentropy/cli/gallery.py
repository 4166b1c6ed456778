"""``crossentropy gallery [NAME ...]``: run the gallery's experiments, print their tables, write their figures."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .._tools.progress import progress_bar
from ._options import non_negative_int

__all__ = ["EXAMPLES", "add_arguments", "command"]

DEFAULT_OUT = "crossentropy-gallery"

EXAMPLES = f"""\
examples:
  crossentropy gallery                     every experiment (minutes); figures and index.html in ./{DEFAULT_OUT}/
  crossentropy gallery --quick             every experiment in seconds each (what the tests run)
  crossentropy gallery surprise gradient   two of them
  crossentropy gallery imbalance --json    the numbers as JSON
  crossentropy gallery --markdown docs/gallery.md
                                           also the tables as markdown (the committed full-run numbers)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..gallery import NAMES

    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"experiments to run (default: all): {', '.join(NAMES)}",
    )
    parser.add_argument("--quick", action="store_true", help="short runs (seconds each) that still show the claims")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(DEFAULT_OUT),
        metavar="DIR",
        help=f"folder for figures and index.html (default ./{DEFAULT_OUT}/)",
    )
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, metavar="S", help="seed of every random choice (default 0)"
    )
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON instead of tables")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="also write the tables as markdown into FILE")
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar (default: on a terminal)"
    )


def command(args: argparse.Namespace) -> int:
    """Run ``crossentropy gallery`` with parsed options; returns the exit code."""
    from .. import gallery

    names = list(dict.fromkeys(args.names)) or list(gallery.NAMES)
    unknown = [name for name in names if name not in gallery.NAMES]
    if unknown:
        known = ", ".join(gallery.NAMES)
        print(
            f"crossentropy gallery: error: no experiment {unknown[0]!r}; the experiments are {known}", file=sys.stderr
        )
        return 2
    try:
        for name in names:
            gallery.experiment(name)
    except ImportError as error:
        print(
            f"crossentropy gallery: error: experiment {name!r} needs {error.name or 'a missing module'}; "
            "install the extras with `pip install 'crossentropy[cli,torch]'`",
            file=sys.stderr,
        )
        return 2
    if args.out.exists() and not args.out.is_dir():
        print(
            f"crossentropy gallery: error: {args.out}: --out must be a directory; this is a file (left alone)",
            file=sys.stderr,
        )
        return 2
    if args.markdown is not None and args.markdown.is_dir():
        print(
            f"crossentropy gallery: error: {args.markdown}: --markdown must name a file; this is a directory",
            file=sys.stderr,
        )
        return 2
    finished = []
    with progress_bar("gallery", unit="experiments", enabled=args.progress) as bar:
        for done, name in enumerate(names):
            bar.update(done, len(names))
            finished += gallery.run([name], args.out, quick=args.quick, seed=args.seed)
            if not args.json:
                print(finished[-1].as_text() + "\n", flush=True)
        bar.update(len(names), len(names))
    index = gallery.write_index(finished, args.out)
    if args.markdown is not None:
        gallery.write_markdown(finished, args.markdown)
    if args.json:
        print(json.dumps({"index": str(index), "experiments": [done.as_dict() for done in finished]}, indent=2))
    else:
        total = sum(done.seconds for done in finished)
        print(f"{len(finished)} experiments in {total:.1f} s; figures and tables: {index}")
    return 0
