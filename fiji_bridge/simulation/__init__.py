"""Simulation: synthetic specimens (`specimens`) and spatially-variant blurred test images (`simulate`), used by
the demo, the tests, the benchmarks and training (needs the ``simulation`` extra: scikit-image)."""
