"""The HTML pages the project writes, opened in a real headless browser (``_browser.py``).

Each page is loaded offline from disk, as a person opens it: no console error (a failed script,
stylesheet or image counts as one), and every image has loaded (``complete`` with a
``naturalWidth`` above 0). The pages: ``crossentropy score --report DIR``'s report,
``crossentropy gallery``'s index, and the documentation site's front page, gallery page and a
reference page with formulas (MathJax, served from the site itself). The site is built by
``make docs``, which runs the ``built_docs`` tests right after the build (``CROSSENTROPY_DOCS_BUILT=1``);
elsewhere they are skipped, so a stale build is never judged.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests._browser import PageReport, open_pages, unavailable
from tests._support import run_cli

SITE = Path(__file__).parents[2] / "docs" / "_build" / "html"

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=f"no headless browser: {unavailable()}")


def assert_clean(report: PageReport, *, min_images: int) -> None:
    assert report.loaded, f"{report.path} did not load"
    assert report.settled, f"{report.path}: the page or its images did not finish loading"
    assert not report.errors, f"{report.path}: console errors:\n" + "\n".join(report.errors)
    assert not report.broken_images, f"{report.path}: images that did not load: {report.broken_images}"
    assert len(report.images) >= min_images, f"{report.path}: {len(report.images)} images, expected {min_images}+"


def test_score_report_page(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), 200)
    labels = rng.integers(0, 3, 200)
    path = tmp_path / "preds.csv"
    rows = [",".join([["cat", "dog", "owl"][y], *map(repr, p.tolist())]) for y, p in zip(labels, probs, strict=True)]
    path.write_text("label,cat,dog,owl\n" + "\n".join(rows) + "\n", encoding="utf-8")
    result = run_cli("score", path, "--target", "label", "--report", tmp_path / "report")
    assert result.returncode == 0, result.stderr
    (report,) = open_pages([tmp_path / "report" / "index.html"])
    assert_clean(report, min_images=2)  # the reliability diagram and the per-class chart


def test_gallery_page(tmp_path):
    result = run_cli("gallery", "surprise", "gradient", "--quick", "--out", tmp_path / "gallery", timeout=300)
    assert result.returncode == 0, result.stderr
    (report,) = open_pages([tmp_path / "gallery" / "index.html"])
    assert_clean(report, min_images=4)  # two figures each


def test_a_broken_page_is_caught(tmp_path):
    """The check itself: a missing image, a missing script and a script's error are all reported."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!doctype html><title>broken</title><img src='missing.png'><script src='missing.js'></script>"
        "<script>console.error('boom')</script>",
        encoding="utf-8",
    )
    (report,) = open_pages([page])
    assert report.broken_images == [(tmp_path / "missing.png").as_uri()]
    assert any("missing.js" in error for error in report.errors)
    assert any("boom" in error for error in report.errors)


@pytest.mark.skipif(
    os.environ.get("CROSSENTROPY_DOCS_BUILT") != "1",
    reason="checks the site `make docs` has just built; `make docs` runs it (CROSSENTROPY_DOCS_BUILT=1)",
)
def test_built_docs_pages():
    pages = [
        SITE / "index.html",
        SITE / "gallery.html",
        SITE / "api" / "generated" / "crossentropy.softmax_cross_entropy.html",
        SITE / "benchmarks" / "softmax_cross_entropy.html",
    ]
    missing = [str(page) for page in pages if not page.is_file()]
    assert not missing, f"not built: {missing} (make docs)"
    front, gallery, reference, benchmark = open_pages(pages)
    assert_clean(front, min_images=0)
    assert_clean(gallery, min_images=20)  # the full run's figures
    assert_clean(reference, min_images=0)
    assert reference.formulas > 0, "MathJax typeset no formula on a page with .. math::"
    assert_clean(benchmark, min_images=1)
