"""The kernels in the process around them: read-only inputs, fork children, DataLoader workers,
threads calling at once, Numba's threads between calls, and where the compiled kernels are cached.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numba
import numpy as np
import pytest
import torch

import crossentropy as ce
from crossentropy import kernels
from crossentropy.kernels import numba as numba_kernels
from crossentropy.kernels.numba import _cache, _threading
from tests._support import tolerance

RNG = np.random.default_rng(2024)
KERNELS_DIR = Path(kernels.__file__).parent
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")


def _read_only(array: np.ndarray, how: str, tmp_path: Path, name: str = "array") -> np.ndarray:
    """``array`` as a read-only array: over a bytes object, or a .npy file ``name`` mapped read-only."""
    if how == "frombuffer":
        result = np.frombuffer(array.tobytes(), dtype=array.dtype).reshape(array.shape)
    else:
        path = tmp_path / f"{name}.npy"
        np.save(path, array)
        result = np.load(path, mmap_mode="r")
    assert not result.flags.writeable
    return result


# --------------------------------------------------------------------------------------------
# Read-only inputs: nothing is written to them, so they must work (one compiled variant each).

READ_ONLY_CASES = [
    ("softmax", np.float32, "index"),
    ("softmax", np.float64, "index"),
    ("softmax", np.float32, "probs"),
    ("sigmoid", np.float32, "probs"),
]


@pytest.mark.parametrize("how", ["frombuffer", "mmap"])
@pytest.mark.parametrize(("loss", "dtype", "targets_kind"), READ_ONLY_CASES, ids=lambda c: getattr(c, "__name__", c))
def test_read_only_inputs_run_on_the_kernels_and_stay_untouched(loss, dtype, targets_kind, how, tmp_path):
    logits = (RNG.standard_normal((5, 37)) * 3).astype(dtype)
    if targets_kind == "index":
        targets = RNG.integers(0, 37, 5)
    elif loss == "softmax":
        targets = RNG.dirichlet(np.ones(37), 5).astype(dtype)
    else:
        targets = RNG.uniform(0, 1, (5, 37)).astype(dtype)
    function, with_grad = {
        "softmax": (ce.softmax_cross_entropy, ce.softmax_cross_entropy_with_grad),
        "sigmoid": (ce.sigmoid_cross_entropy, ce.sigmoid_cross_entropy_with_grad),
    }[loss]
    ro_logits, ro_targets = _read_only(logits, how, tmp_path, "logits"), _read_only(targets, how, tmp_path, "targets")
    before = ro_logits.tobytes(), ro_targets.tobytes()
    options = {"label_smoothing": 0.1, "reduction": "none"}
    for compute in (function, with_grad):
        got = compute(ro_logits, ro_targets, **options)
        want = compute(logits.copy(), targets.copy(), **options)
        got, want = (r if isinstance(r, tuple) else (r,) for r in (got, want))
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, **tolerance(dtype))
    assert (ro_logits.tobytes(), ro_targets.tobytes()) == before


def test_read_only_logits_refuse_to_take_the_gradient_in_place():
    logits = _read_only(np.zeros((2, 3), np.float32), "frombuffer", Path())
    with pytest.raises(ValueError, match="needs writeable C-contiguous logits"):
        numba_kernels.softmax_cross_entropy_rows(
            logits,
            np.zeros(2, np.int64),
            weight=None,
            row_weight=np.ones(2, np.float32),
            grad_factor=np.ones(2, np.float32),
            smoothing=0.0,
            z=0.0,
            cap=None,
            out=logits,
        )


def test_torch_tensors_over_read_only_memory_are_not_written():
    """``torch.from_numpy`` of a read-only array warns but shares the memory: the kernels only read it."""
    import crossentropy.torch as cet

    logits = (RNG.standard_normal((4, 11)) * 2).astype(np.float32)
    ro = _read_only(logits, "frombuffer", Path())
    with pytest.warns(UserWarning, match="not writable"):
        tensor = torch.from_numpy(ro)
    targets = torch.from_numpy(RNG.integers(0, 11, 4))
    _, grad = ce.softmax_cross_entropy_with_grad(tensor, targets)
    leaf = tensor.requires_grad_()
    cet.cross_entropy(leaf, targets).backward()
    torch.testing.assert_close(leaf.grad, grad)
    assert ro.tobytes() == logits.tobytes()


def test_the_scorer_takes_memory_mapped_predictions(tmp_path):
    from crossentropy.cli._scoring import FileScorer as Scorer
    from crossentropy.cli._scoring import ScoreSpec

    probs = RNG.dirichlet(np.ones(3), 50)
    labels = RNG.integers(0, 3, 50)
    reports = []
    mapped = _read_only(probs, "mmap", tmp_path, "p"), _read_only(labels, "mmap", tmp_path, "y")
    for p, y in [(probs, labels), mapped]:
        scorer = Scorer(ScoreSpec(classes=("a", "b", "c")))
        scorer.add(p, y)
        reports.append(scorer.report().log_loss)
    assert reports[0] == reports[1]


# --------------------------------------------------------------------------------------------
# Numba's threads: fork children, DataLoader workers, several Python threads, idle between calls.


def _losses(x: np.ndarray, y: np.ndarray) -> list[float]:
    loss, grad = ce.softmax_cross_entropy_with_grad(x, y)
    binary = ce.sigmoid_cross_entropy(x, (x > 0).astype(x.dtype))
    return [float(loss), float(np.abs(grad).sum()), float(binary)]


def _child_report(connection, x, y) -> None:
    """The losses in this (child) process, whether the kernels ran them, and what a direct kernel launch says."""
    try:
        with _threading.launch_lock():
            direct = "launches"
    except RuntimeError as error:
        direct = str(error)
    connection.send((_losses(x, y), kernels.enabled(), direct))
    connection.close()


def _run_script(code: str, **env: str) -> str:
    """The last line ``code`` prints in a fresh Python, with Numba's threading choice left to crossentropy."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_THREADING_LAYER")}
    result = subprocess.run(
        [sys.executable, "-c", code], env={**environ, **env}, capture_output=True, text=True, check=True, timeout=300
    )
    return result.stdout.strip().splitlines()[-1]


@needs_fork
def test_a_fork_child_computes_losses_after_the_parent_did():
    """GNU OpenMP kills such a child ("fork() called from a process already using GNU OpenMP").

    This process has PyTorch, so its kernels run on GNU OpenMP (PyTorch's threads): the child
    computes the losses with the generic code, and a direct kernel launch there says why not.
    """
    x = RNG.standard_normal((64, 300)).astype(np.float32)
    y = RNG.integers(0, 300, 64)
    want = _losses(x, y)  # the parent runs the kernels first
    assert numba.threading_layer() == "omp"
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    with warnings.catch_warnings():  # Python 3.12+: fork() of a multi-threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        child = context.Process(target=_child_report, args=(sender, x, y))
        child.start()
    sender.close()
    child.join(120)
    assert child.exitcode == 0, f"the fork child ended with {child.exitcode}"
    got, kernels_on, direct = receiver.recv()
    np.testing.assert_allclose(got, want, **tolerance(np.float32))
    assert not kernels_on
    assert "cannot run in a fork child of a process whose kernels ran on GNU OpenMP" in direct
    assert kernels.enabled()  # the parent keeps them


@needs_fork
def test_without_pytorch_a_fork_child_runs_the_kernels_too():
    code = """
import multiprocessing, numpy as np, numba, sys
import crossentropy as ce
from crossentropy import kernels
x = np.random.default_rng(0).standard_normal((64, 300)).astype(np.float32)
y = np.arange(64) % 300
want = float(ce.softmax_cross_entropy(x, y))
def child(connection):
    connection.send((float(ce.softmax_cross_entropy(x, y)), kernels.enabled()))
receiver, sender = multiprocessing.Pipe(duplex=False)
process = multiprocessing.get_context("fork").Process(target=child, args=(sender,))
process.start(); process.join(120)
got, kernels_on = receiver.recv()
print("torch" in sys.modules, numba.threading_layer(), process.exitcode, got == want, kernels_on)
"""
    torch_loaded, layer, exitcode, equal, kernels_on = _run_script(code).split()
    assert torch_loaded == "False"
    assert layer in ("workqueue", "tbb")
    assert (exitcode, equal, kernels_on) == ("0", "True", "True")


class _LossDataset(torch.utils.data.Dataset):
    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> list[float]:
        return _losses(self.x[i], self.y[i])


@needs_fork
def test_dataloader_workers_compute_losses_after_the_parent_did():
    x = RNG.standard_normal((4, 16, 50)).astype(np.float32)
    y = RNG.integers(0, 50, (4, 16))
    want = [_losses(x[i], y[i]) for i in range(4)]  # the parent runs the kernels first
    loader = torch.utils.data.DataLoader(
        _LossDataset(x, y), batch_size=None, num_workers=2, multiprocessing_context="fork", timeout=120
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        got = list(loader)
    np.testing.assert_allclose(got, want, **tolerance(np.float32))


THREADS_AT_ONCE = """
import threading, numpy as np, sys
from concurrent.futures import ThreadPoolExecutor
import crossentropy as ce, numba
rng = np.random.default_rng(0)
inputs = [(rng.standard_normal((96, 257)).astype(np.float32), rng.integers(0, 257, 96)),
          (rng.standard_normal((40, 1000)), rng.integers(0, 1000, 40))] * 3
def losses(x, y):
    loss, grad = ce.softmax_cross_entropy_with_grad(x, y)
    return [float(loss), float(np.abs(grad).sum()), float(ce.sigmoid_cross_entropy(x, (x > 0).astype(x.dtype)))]
want = [losses(x, y) for x, y in inputs]
start = threading.Barrier(len(inputs))
def work(i):
    start.wait()
    return [losses(*inputs[i]) for _ in range(15)]
with ThreadPoolExecutor(len(inputs)) as pool:
    got = list(pool.map(work, range(len(inputs))))
print(numba.threading_layer(), all(run == want[i] for i, runs in enumerate(got) for run in runs))
"""


@pytest.mark.parametrize("with_torch", [False, True], ids=["numpy-only", "with-pytorch"])
def test_threads_calling_the_kernels_at_once_get_the_serial_results(with_torch):
    """Under Numba's workqueue layer two threads launching at once abort the process: the launches take turns."""
    layer, same = _run_script(("import torch\n" if with_torch else "") + THREADS_AT_ONCE).split()
    assert layer == ("omp" if with_torch else "workqueue") or layer == "tbb"
    assert same == "True"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the spin time measured is GNU OpenMP's, on Linux")
def test_numba_threads_sleep_between_kernel_calls():
    """GNU OpenMP's workers spin a few milliseconds after each call, taking cores from BLAS.

    Without PyTorch in the process, which is where the kernels' threads are their own (with
    PyTorch they are PyTorch's, and wait as after any PyTorch operation).
    """
    code = """
import time, numpy as np
import crossentropy as ce
rng = np.random.default_rng(0)
x, y = rng.standard_normal((256, 2000)).astype(np.float32), rng.integers(0, 2000, 256)
for _ in range(3):  # past the first calls' one-time work (compilation or cache loading, Numba's thread start)
    ce.softmax_cross_entropy_with_grad(x, y)
    time.sleep(0.05)
spent = 0.0
for _ in range(5):
    ce.softmax_cross_entropy_with_grad(x, y)
    begin = time.process_time()  # every thread of the process, while this one sleeps
    time.sleep(0.05)
    spent += time.process_time() - begin
print(spent)
"""
    spent = float(_run_script(code))
    assert spent < 0.005, f"{1e3 * spent:.1f} ms of CPU time in 250 ms of idling after kernel calls"


def _layer_in_subprocess(code: str, **env: str) -> str:
    script = "import numpy as np\nimport crossentropy as ce\nimport numba\n" + code
    script += "\nce.softmax_cross_entropy(np.zeros((2, 3)), np.zeros(2, np.int64))\nprint(numba.threading_layer())"
    return _run_script(script, **env)


def test_the_threading_layer_follows_pytorch_and_the_users_choice_is_kept():
    assert _layer_in_subprocess("") in ("workqueue", "tbb")  # no PyTorch: fork-safe and idle
    assert _layer_in_subprocess("import torch") == "omp"  # PyTorch's own OpenMP threads
    assert numba.threading_layer() == "omp"  # this process: PyTorch imported before any kernel ran
    assert _layer_in_subprocess("", NUMBA_THREADING_LAYER="omp") == "omp"
    assert _layer_in_subprocess("import torch", NUMBA_THREADING_LAYER="workqueue") == "workqueue"
    assert _layer_in_subprocess("numba.config.THREADING_LAYER = 'omp'") == "omp"


def test_the_kernels_keep_pytorchs_thread_count():
    """Numba's GNU OpenMP start sets the shared runtime's count; the user's torch.set_num_threads() is kept
    (and with it TorchDynamo's guard on it: no recompilation after the first kernel call)."""
    code = (
        "import torch, numpy as np\n"
        "torch.set_num_threads(1)\n"
        "assert torch.get_num_threads() == 1\n"  # read once, as TorchDynamo does
        "import crossentropy as ce\n"
        "ce.softmax_cross_entropy(np.zeros((64, 10), np.float32), np.zeros(64, np.int64))\n"
        "import numba\n"
        "@numba.njit(parallel=True)\n"
        "def ids(n):\n"
        "    out = np.zeros(n, np.int64)\n"
        "    for i in numba.prange(n):\n"
        "        out[i] = numba.get_thread_id()\n"
        "    return out\n"
        "print(torch.get_num_threads(), len(set(ids(10000).tolist())), numba.get_num_threads())"
    )
    torch_threads, numba_used, numba_threads = map(int, _run_script(code, NUMBA_NUM_THREADS="2").split())
    assert torch_threads == 1
    assert numba_used == numba_threads == 2  # the kernels still run on their own count


def test_the_threading_choice_defers_to_the_user_and_to_threads_already_started(monkeypatch):
    monkeypatch.delenv("NUMBA_THREADING_LAYER", raising=False)
    monkeypatch.delenv("NUMBA_THREADING_LAYER_PRIORITY", raising=False)
    monkeypatch.setattr(numba.config, "THREADING_LAYER", "default")
    for ours in (["tbb", "omp", "workqueue"], ["tbb", "workqueue", "omp"], ["omp", "tbb", "workqueue"]):
        monkeypatch.setattr(numba.config, "THREADING_LAYER_PRIORITY", ours)
        assert not _threading.user_chose()
    monkeypatch.setattr(numba.config, "THREADING_LAYER_PRIORITY", ["workqueue", "omp", "tbb"])
    assert _threading.user_chose()
    monkeypatch.setattr(numba.config, "THREADING_LAYER_PRIORITY", ["tbb", "omp", "workqueue"])
    monkeypatch.setenv("NUMBA_THREADING_LAYER", "default")
    assert _threading.user_chose()
    monkeypatch.delenv("NUMBA_THREADING_LAYER")
    assert _threading.started()  # this process's threads run: configure() leaves the priority alone
    _threading.configure()
    assert numba.config.THREADING_LAYER_PRIORITY == ["tbb", "omp", "workqueue"]


@pytest.mark.parametrize("installed", [True, False])
def test_an_installed_tbb_package_is_loaded_for_numba_to_find(monkeypatch, installed):
    """Numba looks ``libtbb.so.12`` up by name, which misses the ``tbb`` wheel's copy in a virtual environment."""
    import ctypes
    from importlib import metadata

    class File:
        name = "libtbb.so.12"

        def locate(self):
            return Path("/venv/lib/libtbb.so.12")

    def files(name):
        if not installed:
            raise metadata.PackageNotFoundError(name)
        return [File()]

    loaded = []
    monkeypatch.setattr(metadata, "files", files)
    monkeypatch.setattr(ctypes, "CDLL", lambda path, mode: loaded.append((path, mode)))
    monkeypatch.setattr(_threading, "_tbb_preloaded", False)
    monkeypatch.setattr(sys, "platform", "linux")
    _threading._preload_tbb()
    assert loaded == ([("/venv/lib/libtbb.so.12", ctypes.RTLD_GLOBAL)] if installed else [])


# --------------------------------------------------------------------------------------------
# Numba's on-disk cache: the user's cache folder, not the package's.


@pytest.mark.parametrize(
    ("platform", "env", "expected"),
    [
        ("linux", {"XDG_CACHE_HOME": "/xdg"}, "/xdg/crossentropy/numba"),
        ("linux", {"XDG_CACHE_HOME": "relative/path"}, "/home/u/.cache/crossentropy/numba"),
        ("linux", {}, "/home/u/.cache/crossentropy/numba"),
        ("darwin", {"XDG_CACHE_HOME": "/xdg"}, "/home/u/Library/Caches/crossentropy/numba"),
        ("win32", {"LOCALAPPDATA": "/appdata/local"}, "/appdata/local/crossentropy/numba"),
    ],
)
def test_the_cache_folder_follows_the_platforms_convention(monkeypatch, platform, env, expected):
    monkeypatch.setattr(sys, "platform", platform)
    for name in ("XDG_CACHE_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/home/u")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _cache.user_cache_dir() == Path(expected)


def _square(x):
    return x * x


@pytest.mark.parametrize("where", ["user", "NUMBA_CACHE_DIR", "unwritable"])
def test_a_kernel_is_cached_in_the_users_folder_or_numba_cache_dir_or_in_memory(monkeypatch, tmp_path, where):
    from numba.core.caching import NullCache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "numba") if where == "NUMBA_CACHE_DIR" else "")
    if where == "unwritable":  # a folder cannot be made under a file
        (tmp_path / "file").write_text("")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    dispatcher = numba.njit(_square)
    _cache.refresh(dispatcher)
    assert dispatcher(3.0) == 9.0
    if where == "unwritable":
        assert isinstance(dispatcher._cache, NullCache)
        return
    root = tmp_path / ("numba" if where == "NUMBA_CACHE_DIR" else "xdg/crossentropy/numba")
    assert Path(dispatcher._cache._cache_path).parent == root
    assert sorted(p.suffix for p in Path(dispatcher._cache._cache_path).iterdir()) == [".nbc", ".nbi", ".sha256"]
    assert not (tmp_path / "xdg").exists() or where == "user"


def _package_cache_files() -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in KERNELS_DIR.rglob("*") if p.suffix in (".nbi", ".nbc", ".sha256")}


def test_the_kernels_cache_goes_to_the_users_folder_not_the_package(tmp_path):
    """An installed package must not write into site-packages; NUMBA_CACHE_DIR stays the override."""
    before = _package_cache_files()
    environ = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    environ.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), HOME=str(tmp_path / "home"))
    script = (
        "import json, crossentropy.kernels.numba._softmax as s, crossentropy.kernels.numba._sigmoid as g\n"
        "print(json.dumps([s.softmax_cross_entropy_index._cache._cache_path,"
        " g.sigmoid_cross_entropy_flat._cache._cache_path]))"
    )
    run = [sys.executable, "-c", script]
    paths = json.loads(subprocess.run(run, env=environ, capture_output=True, text=True, check=True).stdout)
    root = tmp_path / "xdg" / "crossentropy" / "numba"
    assert all(Path(p).parent == root for p in paths)
    assert {p.name for p in Path(paths[0]).iterdir()} >= {"_softmax.sources.sha256", "_sigmoid.sources.sha256"}
    environ["NUMBA_CACHE_DIR"] = str(tmp_path / "numba")
    paths = json.loads(subprocess.run(run, env=environ, capture_output=True, text=True, check=True).stdout)
    assert all(Path(p).parent == tmp_path / "numba" for p in paths)
    assert _package_cache_files() == before
