"""Build the sdist and the wheel, check them, and try the wheel away from the source tree (issue 20 §5).

1. ``python -m build`` makes both; ``twine check --strict`` checks their metadata (the README renders
   as the long description, the fields PyPI needs are there).
2. Every file git tracks under ``src/crossentropy`` is in the wheel, and in the sdist.
3. The wheel (with its ``cli`` extra) goes into a fresh virtual environment, whose Python then runs
   in an empty folder, where the source tree cannot be imported: ``crossentropy demo``, and an
   import of every public module, each checked to come from that environment.

    python .ci/check_package.py        # from the repository's .venv (make package)
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH_PIN = "torch==2.13.0"  # as the Makefile: a looser requirement pulls CUDA packages
PUBLIC_MODULES = [
    "crossentropy",
    "crossentropy.metrics",
    "crossentropy.kernels",
    "crossentropy.torch",
    "crossentropy.dask",
    "crossentropy.cli",
    "crossentropy.gallery",
]


def run(*command: str | Path, cwd: Path | None = None) -> None:
    print("+", " ".join(str(c) for c in command), flush=True)
    subprocess.run([str(c) for c in command], cwd=cwd, check=True)


def tracked_package_files() -> set[str]:
    listing = subprocess.run(
        ["git", "ls-files", "src/crossentropy"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    return {name.removeprefix("src/") for name in listing}


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        dist = scratch / "dist"
        run(sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", dist, ROOT)
        wheel, sdist = next(dist.glob("*.whl")), next(dist.glob("*.tar.gz"))
        run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist)

        expected = tracked_package_files()
        in_wheel = set(zipfile.ZipFile(wheel).namelist())
        with tarfile.open(sdist) as archive:
            in_sdist = {name.split("/", 1)[1].removeprefix("src/") for name in archive.getnames() if "/" in name}
        for kind, contents in (("wheel", in_wheel), ("sdist", in_sdist)):
            missing = sorted(expected - contents)
            if missing:
                sys.exit(f"the {kind} lacks files that git tracks: {missing}")
        print(f"wheel and sdist hold all {len(expected)} tracked files of src/crossentropy")

        environment = scratch / "venv"
        venv.create(environment, with_pip=True)
        python = environment / "bin" / "python"
        run(python, "-m", "pip", "install", "--quiet", TORCH_PIN)
        run(python, "-m", "pip", "install", "--quiet", f"{wheel}[cli,dask]", TORCH_PIN)
        away = scratch / "elsewhere"
        away.mkdir()
        run(environment / "bin" / "crossentropy", "demo", cwd=away)
        check = (
            "import importlib, pathlib\n"
            f"for name in {PUBLIC_MODULES!r}:\n"
            "    path = pathlib.Path(importlib.import_module(name).__file__)\n"
            f"    assert path.is_relative_to({str(environment)!r}), f'{{name}} imported from {{path}}'\n"
            f"print('imported from the installed wheel:', {', '.join(PUBLIC_MODULES)!r})\n"
        )
        run(python, "-c", check, cwd=away)


if __name__ == "__main__":
    main()
