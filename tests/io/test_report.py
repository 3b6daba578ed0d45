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


def _small_map(reliable, beyond=None, grid=(4, 4)):
    from fiji_bridge.estimation.psf_map import PSFMap
    from fiji_bridge.optics import Optics
    params = np.full((1, *grid), 0.5, np.float32)
    informative = np.ones(grid, bool)
    informative[0, 0] = False
    return PSFMap(parameters=params, raw=params, std=np.full_like(params, 0.1), confidence=informative * 1.0,
                  informative=informative, centres_y=np.arange(grid[0]) * 64.0 + 32,
                  centres_x=np.arange(grid[1]) * 64.0 + 32, names=["defocus"], units=["waves RMS"], nolls=[4],
                  patch_size=64, stride=64, optics=Optics(na=0.75, wavelength=0.53, pixel_size=0.16), psf_size=31,
                  image_shape=(64 * grid[0], 64 * grid[1]), beyond=beyond, reliable=reliable)


def test_the_report_says_how_much_of_the_map_was_filled_and_out_of_range(tmp_path):
    """Shares are of the informative patches (15 of 16 here): 5 too uncertain and filled, 2 beyond range."""
    from fiji_bridge.io.report import reliability_summary, write_report
    reliable = np.ones((4, 4), bool)
    reliable[0, :] = False                    # (0, 0) is not informative; three filled
    reliable[1, 0] = reliable[2, 0] = False    # two more
    beyond = np.zeros((4, 4), np.float32)
    beyond[3, 2:] = 1.0
    reliable[3, 2:] = False                    # beyond range: counted there, not as filled
    m = _small_map(reliable, beyond)
    text = reliability_summary(m)
    assert "informative 94%" in text and "beyond range 13% (x)" in text and "filled from neighbours 33% (·)" in text
    assert "filled" not in reliability_summary(_small_map(np.ones((4, 4), bool)))
    assert "filled" not in reliability_summary(_small_map(None))          # v1 maps: no σ fill
    img = np.random.default_rng(0).random((256, 256)).astype(np.float32)
    path = write_report(tmp_path / "r.png", img, img, m, np.ones((2, 2, 5, 5), np.float32))
    assert path.stat().st_size > 1000
