r"""Numba's on-disk cache of the kernels: where it lives, and made to notice edits to any kernel source file.

**Where.** Numba's own default puts a function's cache next to its source file
(``kernels/__pycache__``) whenever that folder is writable, which for an installed package means
writing into site-packages. The kernels here keep theirs in the platform's per-user cache folder
instead:

- Linux and other POSIX systems: ``$XDG_CACHE_HOME/crossentropy/numba`` (``~/.cache/crossentropy/numba``
  when ``XDG_CACHE_HOME`` is unset or not an absolute path, as the XDG specification says);
- macOS: ``~/Library/Caches/crossentropy/numba``;
- Windows: ``%LOCALAPPDATA%\crossentropy\numba``;

each install in a subfolder named after the kernels' folder and a hash of its path (as Numba's
own per-user cache does), so two environments neither share nor clear each other's entries.
Numba's overrides still win: ``NUMBA_CACHE_DIR`` (then the cache is under it, as for every Numba
function) and ``NUMBA_CACHE_LOCATOR_CLASSES``. Only this package's kernels are concerned; other
Numba functions in the process keep Numba's default locations. When the folder cannot be
created or written, the kernels are compiled in memory in each process, as without a cache.

The kernels are therefore decorated without ``cache=True``; :func:`refresh`, called by each
kernel module with its kernels, attaches the cache.

**Freshness.** Numba keys a cached kernel on the source file of the jitted function alone, so an
edit to a helper in another file (``_math.py``) would keep loading stale machine code.
:func:`refresh` stamps the cache folder with a digest of every source file of this folder and of
the kernel's own folder (the command line keeps its kernels in ``cli/_kernels``) and clears a
module's cached kernels when the digest changes.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

_SOURCES = Path(__file__).parent


def user_cache_dir() -> Path | None:
    """The kernels' cache folder by the platform's convention (module docstring), or None without a home folder."""
    try:
        if sys.platform == "win32":
            base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        elif sys.platform == "darwin":
            base = str(Path.home() / "Library" / "Caches")
        else:
            xdg = os.environ.get("XDG_CACHE_HOME", "")
            base = xdg if os.path.isabs(xdg) else str(Path.home() / ".cache")
    except (RuntimeError, KeyError):  # no home folder to be found
        return None
    if not os.path.isabs(base):  # "~" left unexpanded
        return None
    return Path(base) / "crossentropy" / "numba"


@functools.cache
def _cache_class() -> Any:
    """Numba's ``FunctionCache`` looking in ``NUMBA_CACHE_DIR`` or :func:`user_cache_dir`, or None.

    None when this Numba's caching internals are not the ones this was written against; the
    kernels then get Numba's default cache.
    """
    try:
        from numba.core import caching
    except ImportError:  # pragma: no cover - Numba always has it
        return None
    # Numba 0.59 to 0.61 spell the public names of 0.62+ with a leading underscore.
    user_provided = getattr(caching, "UserProvidedCacheLocator", None) or getattr(
        caching, "_UserProvidedCacheLocator", None
    )
    cache_impl = getattr(caching, "CompileResultCacheImpl", None)
    function_cache = getattr(caching, "FunctionCache", None)
    mixin = getattr(caching, "_SourceFileBackedLocatorMixin", None)
    locator = getattr(caching, "_CacheLocator", None)
    if None in (user_provided, cache_impl, function_cache, mixin, locator):
        return None

    class UserCacheLocator(mixin, locator):
        """The per-user cache folder of :func:`user_cache_dir`, one subfolder per install."""

        def __init__(self, py_func: Any, py_file: str) -> None:
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            self._cache_path = str(user_cache_dir() / self.get_suitable_cache_subpath(py_file))

        def get_cache_path(self) -> str:
            return self._cache_path

        @classmethod
        def from_function(cls, py_func: Any, py_file: str) -> Any:
            if user_cache_dir() is None:
                return None
            # Creates the folder and checks that it is writable; None when it is not.
            return super().from_function(py_func, py_file)

    class KernelCacheImpl(cache_impl):
        _locator_classes = [user_provided, UserCacheLocator]  # noqa: RUF012 - Numba's class attribute

    class KernelCache(function_cache):
        _impl_class = KernelCacheImpl

    return KernelCache


def _attach(dispatcher: Any) -> None:
    """Give a Numba dispatcher the kernels' on-disk cache, or none (compiled in memory) when no folder is usable."""
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    if not isinstance(dispatcher, Dispatcher):
        return
    cache_class = _cache_class()
    if cache_class is None:  # pragma: no cover - another Numba's internals
        dispatcher.enable_caching()
        return
    try:
        dispatcher._cache = cache_class(dispatcher.py_func)
    except (RuntimeError, OSError):  # no locator could create and write its folder
        dispatcher._cache = NullCache()


def _digest(folders: list[Path]) -> str:
    sha = hashlib.sha256()
    for folder in folders:
        for path in sorted(folder.glob("*.py")):
            sha.update(path.name.encode())
            sha.update(path.read_bytes())
    return sha.hexdigest()


def _source_folders(module_name: str) -> list[Path]:
    """This folder (the shared math) and the folder of the module ``module_name``, when it is another."""
    module_file = getattr(sys.modules.get(module_name), "__file__", None)
    folder = Path(module_file).parent if module_file else _SOURCES
    return [_SOURCES] if folder == _SOURCES else [_SOURCES, folder]


def refresh(*dispatchers: Any) -> None:
    """Attach the on-disk cache to ``dispatchers``; clear their modules' cached code if a kernel source changed since.

    A cache folder that cannot be read or written is left alone (Numba then compiles in memory,
    as it does without a cache).
    """
    for dispatcher in dispatchers:
        _attach(dispatcher)
        cache = getattr(dispatcher, "_cache", None)
        cache_dir = getattr(cache, "_cache_path", None)
        if cache_dir is None:
            continue
        digest = _digest(_source_folders(dispatcher.py_func.__module__))
        module = dispatcher.py_func.__module__.rsplit(".", 1)[-1]
        stamp = Path(cache_dir) / f"{module}.sources.sha256"
        try:
            if stamp.is_file() and stamp.read_text() == digest:
                continue
            for stale in Path(cache_dir).glob(f"{module}.*.nb[ic]"):
                stale.unlink()
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.write_text(digest)
        except OSError:
            continue
