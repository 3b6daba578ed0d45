import numpy as np
import pytest

from fiji_bridge.io.report import psf_montage


@pytest.mark.parametrize("gap", [0, 1])
def test_psf_montage_layout(gap):
    psfs = np.zeros((2, 3, 5, 5), np.float32)
    psfs[1, 2, 2, 2] = 4.0
    psfs[0, 0, 0, 0] = 0.5
    mont = psf_montage(psfs, gap=gap)
    step = 5 + gap
    assert mont.shape == (2 * step - gap, 3 * step - gap)
    assert mont[step + 2, 2 * step + 2] == 1.0 and mont[0, 0] == 1.0 and mont.sum() == 2.0
    with pytest.raises(ValueError, match="psfs"):
        psf_montage(np.zeros((5, 5)))
