"""The bundled data sets equal scikit-learn's copies exactly."""

from __future__ import annotations

import numpy as np
import pytest

from crossentropy import data

sklearn_datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn is the reference copy")


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (data.load_breast_cancer, sklearn_datasets.load_breast_cancer),
        (data.load_wine, sklearn_datasets.load_wine),
        (data.load_iris, sklearn_datasets.load_iris),
    ],
)
def test_bundled_tables_equal_scikit_learn(ours, theirs):
    bundled, reference = ours(), theirs()
    np.testing.assert_array_equal(bundled.features, reference.data)
    assert bundled.features.dtype == np.float64
    np.testing.assert_array_equal(bundled.labels, reference.target)
    assert bundled.labels.dtype == np.int64
    assert bundled.class_names == tuple(str(name) for name in reference.target_names)
    assert bundled.feature_names == tuple(str(name) for name in reference.feature_names)
