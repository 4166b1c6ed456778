"""Triton kernels of the softmax and sigmoid cross-entropies (the GPU backend of :mod:`crossentropy.kernels`)."""
