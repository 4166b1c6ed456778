"""Open HTML pages in a real headless browser (Chromium, through Qt WebEngine) and report what went wrong.

``open_pages(paths)`` loads each page as a person's browser would (``file://``, offline), waits
until the page and its images have loaded (and MathJax has typeset, where the page uses it), and
returns a :class:`PageReport` per page: every console message (with the errors of resources that
failed to load — a script, a stylesheet, an image — added as console errors), and every image's
``complete`` and ``naturalWidth``. The browser runs in a child process (``python tests/_browser.py
PAGE ...``, JSON on stdout), so Qt's event loop, threads and Chromium's helper processes never
share the test process.

``unavailable()`` says why no browser can run here (``None`` when one can): PyQt6-WebEngine not
installed, or a shared library it needs missing from the system (named).

Chromium runs with ``--no-sandbox`` (its sandbox cannot start as root, which CI is) and without
a GPU, on Qt's ``offscreen`` platform: no display needed.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

TIMEOUT_S = 60.0

# Added to every page before its own scripts run: a resource that fails to load (script, stylesheet,
# image, font face) becomes a console error naming it, as Chromium's developer console shows it.
_RESOURCE_ERRORS = """
window.addEventListener("error", function (event) {
  var target = event.target;
  if (target && target !== window && (target.src || target.href)) {
    console.error("failed to load " + (target.tagName || "").toLowerCase() + " " + (target.src || target.href));
  }
}, true);
"""

# True once the page, its images and (where present) MathJax's first typesetting are done. Lazy
# images are asked to load now: the page is checked whole, not only its first screen.
_SETTLED = """
(function () {
  if (window.__settledFlag === undefined) {
    window.__settledFlag = false;
    Array.from(document.images).forEach(function (img) { img.loading = "eager"; });
    var mathjax = window.MathJax && window.MathJax.startup && window.MathJax.startup.promise;
    Promise.resolve(mathjax).then(function () { window.__mathDone = true; },
                                  function (e) { console.error("MathJax failed: " + e); window.__mathDone = true; });
  }
  var images = Array.from(document.images).every(function (img) { return img.complete; });
  return document.readyState === "complete" && images && window.__mathDone === true;
})()
"""

_SUMMARY = """
JSON.stringify({
  images: Array.from(document.images).map(function (img) {
    return {src: img.currentSrc || img.src, complete: img.complete, naturalWidth: img.naturalWidth};
  }),
  formulas: document.querySelectorAll("mjx-container").length
})
"""


@dataclass
class PageReport:
    """What the browser saw of one page."""

    path: str
    loaded: bool
    settled: bool
    title: str = ""
    # {"level": "info" | "warning" | "error", "message", "source", "line"}
    console: list[dict] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)  # {"src", "complete", "naturalWidth"}
    formulas: int = 0  # formulas MathJax typeset

    @property
    def errors(self) -> list[str]:
        """The console's errors, one line each."""
        return [f"{m['source']}:{m['line']}: {m['message']}" for m in self.console if m["level"] == "error"]

    @property
    def broken_images(self) -> list[str]:
        """The images that did not load (not complete, or no pixels)."""
        return [image["src"] for image in self.images if not (image["complete"] and image["naturalWidth"] > 0)]


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["QT_QPA_PLATFORM"] = "offscreen"
    env["QTWEBENGINE_DISABLE_SANDBOX"] = "1"
    flags = env.get("QTWEBENGINE_CHROMIUM_FLAGS", "")
    env["QTWEBENGINE_CHROMIUM_FLAGS"] = f"{flags} --no-sandbox --disable-gpu --disable-dev-shm-usage".strip()
    env.setdefault("QT_LOGGING_RULES", "*.debug=false;qt.qpa.*=false;qt.rhi.*=false")
    return env


def _run_child(paths: list[Path], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, __file__, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=timeout + 60,
        env=_environment(),
        check=False,
    )


@functools.cache
def unavailable() -> str | None:
    """Why no headless browser can run here, or ``None`` when one can (checked once per process)."""
    try:
        import PyQt6.QtWebEngineCore  # noqa: F401
    except ModuleNotFoundError:
        return "PyQt6-WebEngine is not installed (it is in the test extra: pip install -e '.[test]')"
    except ImportError as error:  # a shared library of Qt's missing from the system
        missing = re.search(r"(lib[\w.+-]+\.so[\w.]*)", str(error))
        return f"Qt WebEngine cannot load: {missing[1] if missing else error} (a system library, not on PyPI)"
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "probe.html"
        probe.write_text("<!doctype html><title>probe</title><p>probe</p>", encoding="utf-8")
        try:
            result = _run_child([probe], timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            result = None
    if result is None:
        return f"Qt WebEngine did not load a blank page in {TIMEOUT_S:.0f} s"
    if result.returncode != 0:
        missing = re.search(r"(lib[\w.+-]+\.so[\w.]*)", result.stderr)
        detail = missing[1] if missing else result.stderr.strip().splitlines()[-1:] or ["no output"]
        return f"Qt WebEngine cannot start here: {detail if missing else detail[0]}"
    return None


def open_pages(paths: list[Path], *, timeout: float = TIMEOUT_S) -> list[PageReport]:
    """Load each page in the headless browser; one :class:`PageReport` per page, in order."""
    result = _run_child([Path(p).resolve() for p in paths], timeout=timeout * len(paths))
    if result.returncode != 0:
        raise RuntimeError(f"the headless browser failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    return [PageReport(**report) for report in json.loads(result.stdout)]


# ---------------------------------------------------------------------------------------------
# The child process


def _browse(paths: list[str], timeout: float) -> list[dict]:
    from PyQt6.QtCore import QEventLoop, QTimer, QUrl
    from PyQt6.QtWebEngineCore import QWebEnginePage, QWebEngineProfile, QWebEngineScript
    from PyQt6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([sys.argv[0]])
    levels = {
        QWebEnginePage.JavaScriptConsoleMessageLevel.InfoMessageLevel: "info",
        QWebEnginePage.JavaScriptConsoleMessageLevel.WarningMessageLevel: "warning",
        QWebEnginePage.JavaScriptConsoleMessageLevel.ErrorMessageLevel: "error",
    }

    class Page(QWebEnginePage):
        def __init__(self, profile: QWebEngineProfile) -> None:
            super().__init__(profile)
            self.console: list[dict] = []

        def javaScriptConsoleMessage(self, level, message, line, source):
            entry = {"level": levels.get(level, str(level)), "message": message, "source": source, "line": line}
            self.console.append(entry)

    profile = QWebEngineProfile()  # off the record: no cache or cookies kept between runs
    script = QWebEngineScript()
    script.setName("resource-errors")
    script.setSourceCode(_RESOURCE_ERRORS)
    script.setInjectionPoint(QWebEngineScript.InjectionPoint.DocumentCreation)
    script.setWorldId(QWebEngineScript.ScriptWorldId.MainWorld)
    script.setRunsOnSubFrames(True)
    profile.scripts().insert(script)

    def wait(page: Page, expression: str, seconds: float):
        """Evaluate ``expression`` in the page and return its value, running Qt's loop meanwhile."""
        loop, box = QEventLoop(), []
        page.runJavaScript(expression, 0, lambda value: (box.append(value), loop.quit()))
        QTimer.singleShot(int(seconds * 1000), loop.quit)
        loop.exec()
        return box[0] if box else None

    reports = []
    for path in paths:
        page = Page(profile)
        loop, loaded = QEventLoop(), []
        page.loadFinished.connect(lambda ok, loaded=loaded, loop=loop: (loaded.append(ok), loop.quit()))
        page.load(QUrl.fromLocalFile(path))
        QTimer.singleShot(int(timeout * 1000), loop.quit)
        loop.exec()
        settled = False
        if loaded and loaded[0]:
            for _ in range(int(timeout / 0.2)):
                if wait(page, _SETTLED, 5.0) is True:
                    settled = True
                    break
                pause = QEventLoop()
                QTimer.singleShot(200, pause.quit)
                pause.exec()
        summary = json.loads(wait(page, _SUMMARY, 5.0) or '{"images": [], "formulas": 0}')
        reports.append(
            {
                "path": path,
                "loaded": bool(loaded and loaded[0]),
                "settled": settled,
                "title": page.title(),
                "console": page.console,
                "images": summary["images"],
                "formulas": summary["formulas"],
            }
        )
        page.deleteLater()
    del profile
    app.processEvents()
    return reports


if __name__ == "__main__":
    print(json.dumps(_browse(sys.argv[1:], TIMEOUT_S)))
