"""Numba kernels of the command line: ``score``'s per-row accumulation and its one-pass CSV parser.

Only ``crossentropy score`` uses them, so they live with it, not among the library's loss
kernels (:mod:`crossentropy.kernels`); they share those kernels' math helpers, threading layer
and on-disk cache (:mod:`crossentropy.kernels.numba`).
"""
