import numpy as np
import pytest

from fiji_bridge.restoration.backend import cupy_module

CUPY = cupy_module()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def array_modules():
    """NumPy always; CuPy as a `gpu`-marked param skipped with a reason when no GPU is usable."""
    return [
        pytest.param(np, id="numpy"),
        pytest.param(CUPY, id="cupy", marks=[pytest.mark.gpu, pytest.mark.skipif(
            CUPY is None, reason="CuPy with a CUDA GPU is not available on this machine")]),
    ]


class RecordingImage:
    """A lazy image (anything with ``.shape`` and row slicing, like a memory-mapped TIFF) that records the
    number of rows of every read."""

    def __init__(self, data):
        self.data, self.shape, self.reads = data, data.shape, []

    def __getitem__(self, key):
        rows = key[0] if isinstance(key, tuple) else key
        self.reads.append(len(range(*rows.indices(self.shape[0]))))
        return self.data[key]
