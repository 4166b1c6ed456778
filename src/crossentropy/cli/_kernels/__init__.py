"""Numba kernels of the command line: ``score``'s one-pass CSV parser.

The parser scores each line it reads with the per-row code of the library's streaming scorer
(:func:`crossentropy.kernels.numba._scoring.score_row`, behind :class:`crossentropy.metrics.Scorer`),
into that scorer's sums; it shares the loss kernels' math helpers, threading layer and on-disk
cache (:mod:`crossentropy.kernels.numba`).
"""
