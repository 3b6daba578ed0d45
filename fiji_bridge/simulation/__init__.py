"""Simulation: synthetic specimens (`specimens`), spatially-variant blurred test images (`simulate`) and the SNR
against their ground truth (`metrics`); used by the demo, the tests, the benchmarks and training. Specimens need
the ``simulation`` extra (scikit-image)."""
