"""Small data sets bundled with the package, read without pickle.

``digits.npz`` is the test set of the *Optical Recognition of Handwritten Digits* data set of the
UCI Machine Learning Repository (E. Alpaydin and C. Kaynak, 1998; https://doi.org/10.24432/C50P49),
licensed under CC BY 4.0, as shipped by scikit-learn (:func:`sklearn.datasets.load_digits`):
1,797 images of 8×8 pixels, each pixel the count (0 to 16) of set pixels in a 4×4 block of the
original 32×32 bitmap, and the digit each image shows. It was written once, from scikit-learn
1.9, by::

    from sklearn.datasets import load_digits
    digits = load_digits()
    np.savez_compressed("digits.npz", images=digits.data.astype(np.uint8), labels=digits.target)

``breast_cancer.npz``, ``wine.npz`` and ``iris.npz`` are scikit-learn's copies of the UCI
*Breast Cancer Wisconsin (Diagnostic)* (W. Wolberg, W. Street and O. Mangasarian, 1995;
https://doi.org/10.24432/C5DW2B), *Wine* (S. Aeberhard and M. Forina, 1991;
https://doi.org/10.24432/C5PC7J) and *Iris* (R. A. Fisher, 1936; https://doi.org/10.24432/C56C76)
data sets, all CC BY 4.0, written once from scikit-learn 1.9 by::

    for name, load in (("breast_cancer", load_breast_cancer), ("wine", load_wine), ("iris", load_iris)):
        data = load()
        np.savez_compressed(f"{name}.npz", features=data.data, labels=data.target.astype(np.int64),
                            class_names=np.array(data.target_names, dtype=str),
                            feature_names=np.array(data.feature_names, dtype=str))

The test suite checks that every file equals scikit-learn's copy exactly.
"""

from __future__ import annotations

from importlib import resources
from typing import NamedTuple

import numpy as np

__all__ = ["Dataset", "load_breast_cancer", "load_digits", "load_iris", "load_wine"]


class Dataset(NamedTuple):
    """A bundled tabular data set: features, integer labels and the names of both."""

    features: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...]


def _load_tabular(name: str) -> Dataset:
    resource = resources.files(__name__).joinpath(f"{name}.npz")
    with resources.as_file(resource) as path, np.load(path, allow_pickle=False) as archive:
        return Dataset(
            features=archive["features"],
            labels=archive["labels"],
            class_names=tuple(str(v) for v in archive["class_names"]),
            feature_names=tuple(str(v) for v in archive["feature_names"]),
        )


def load_breast_cancer() -> Dataset:
    """569 breast-mass samples, 30 float64 features, labels 0 = malignant (212), 1 = benign (357).

    Equal to ``sklearn.datasets.load_breast_cancer()``; see :mod:`crossentropy.data`.

    >>> data = load_breast_cancer()
    >>> data.features.shape, data.class_names, int(data.labels.sum())
    ((569, 30), ('malignant', 'benign'), 357)
    """
    return _load_tabular("breast_cancer")


def load_wine() -> Dataset:
    """178 wines, 13 float64 chemical features, three cultivars 0, 1, 2 (59, 71, 48 samples).

    Equal to ``sklearn.datasets.load_wine()``; see :mod:`crossentropy.data`.

    >>> data = load_wine()
    >>> data.features.shape, np.bincount(data.labels).tolist()
    ((178, 13), [59, 71, 48])
    """
    return _load_tabular("wine")


def load_iris() -> Dataset:
    """150 irises, 4 float64 measurements (cm), three species 0, 1, 2 (50 each).

    Equal to ``sklearn.datasets.load_iris()``; see :mod:`crossentropy.data`.

    >>> data = load_iris()
    >>> data.features.shape, data.class_names
    ((150, 4), ('setosa', 'versicolor', 'virginica'))
    """
    return _load_tabular("iris")


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The bundled handwritten digits: 1,797 images of 8×8 pixels and their labels 0 to 9.

    Returns
    -------
    images : uint8 array of shape (1797, 64)
        Pixel values 0 to 16, each image's rows one after another (``images[n].reshape(8, 8)``
        is the picture); equal to ``sklearn.datasets.load_digits().data``.
    labels : int64 array of shape (1797,)
        The digit each image shows; equal to ``sklearn.datasets.load_digits().target``.

    Notes
    -----
    The data are the UCI *Optical Recognition of Handwritten Digits* test set (Alpaydin and
    Kaynak, 1998), CC BY 4.0, as shipped by scikit-learn; see :mod:`crossentropy.data`. The
    file is read with ``allow_pickle=False``.

    Examples
    --------
    >>> images, labels = load_digits()
    >>> images.shape, labels.shape, int(images.max()), sorted(set(labels.tolist())) == list(range(10))
    ((1797, 64), (1797,), 16, True)
    """
    resource = resources.files(__name__).joinpath("digits.npz")
    with resources.as_file(resource) as path, np.load(path, allow_pickle=False) as archive:
        return archive["images"], archive["labels"].astype(np.int64, copy=False)
