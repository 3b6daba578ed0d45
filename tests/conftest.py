import numpy as np
import pytest

from fiji_bridge.restoration.backend import cupy_module

CUPY = cupy_module()


def simulation_config():
    """The config simulated test inputs are drawn from: the bundled near-focus model's (defocus 0-0.35 waves
    RMS, astigmatisms ±0.12, NA 0.75 at 0.16 µm pixels, 41-px PSFs): blur small enough for small, fast images
    and the tiles of the tiling tests, read by the default model through its near-focus model."""
    from fiji_bridge.estimation.model import PSFModel
    return PSFModel().near_focus.config


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
