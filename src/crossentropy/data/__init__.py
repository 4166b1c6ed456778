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

The test suite checks that it equals scikit-learn's copy exactly.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

__all__ = ["load_digits"]


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
