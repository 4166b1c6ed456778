"""Tools shared by the applications (the command line, the gallery, Dask) and the benchmark scripts.

A neutral home below the applications: it imports nothing from :mod:`crossentropy.cli` or
:mod:`crossentropy.gallery`, so both (and ``benchmarks/*.py``) can use it without importing each
other. Private: no stability promise beyond this repository.

- :mod:`~crossentropy._tools.timing`: the timing loop (garbage collector off, warm-ups, medians,
  interleaved candidates, the host's clock or a device's), and a child process's wall time, CPU
  time and peak resident set;
- :mod:`~crossentropy._tools.memory`: peak-memory probes (tracemalloc in this process; the peak
  resident set of a worker process, reset before each call);
- :mod:`~crossentropy._tools.environment`: the environment record (machine, cores, library
  versions, load);
- :mod:`~crossentropy._tools.tables`: one table type rendered as plain text, Markdown, HTML or rich;
- :mod:`~crossentropy._tools.progress`: progress bars (rich on a terminal, silent or one line per
  step otherwise);
- :mod:`~crossentropy._tools.files`: output files written atomically, matplotlib without a window;
- :mod:`~crossentropy._tools.data`: thread limits for small training loops, splits, scaling.
"""
