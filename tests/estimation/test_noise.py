"""Noise estimation from the image and the automatic iterations / TV weight (fiji_bridge.estimation.noise)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import fftconvolve

from fiji_bridge import deconvolve
from fiji_bridge.estimation.noise import DEFAULT_RULE, auto_settings, estimate_noise, photon_level, theil_sen
from fiji_bridge.optics import Optics
from fiji_bridge.optics.psf import zernike_psf
from fiji_bridge.simulation.specimens import GENERATORS

PSF = zernike_psf(Optics(0.75, 0.53, 0.16), {"defocus": 0.3}, 41)


def _camera(name, photons, gain, offset, read, seed=0, shape=(256, 256)):
    rng = np.random.default_rng(seed)
    clean = (fftconvolve(GENERATORS[name](shape, rng), PSF, mode="same") * 0.95 + 0.05) * photons
    return gain * rng.poisson(np.clip(clean, 0, None)) + offset + rng.normal(0, read, shape), clean


@pytest.mark.parametrize("name", ["cells", "membranes", "mixture"])
@pytest.mark.parametrize("photons", [100, 1000, 10000])
@pytest.mark.parametrize("gain, offset, read", [(1.0, 0.0, 0.0), (2.5, 100.0, 3.0)])
def test_gain_and_photon_level_are_recovered(name, photons, gain, offset, read):
    y, clean = _camera(name, photons, gain, offset, read)
    noise = estimate_noise(y)
    assert noise.gain == pytest.approx(gain, rel=0.2)
    assert 0.6 < photon_level(y, noise) / np.quantile(clean, 0.995) < 1.6


def test_settings_do_not_depend_on_camera_gain_or_offset():
    y, _ = _camera("cells", 500, 1.0, 0.0, 0.0, seed=3)
    a = auto_settings(y)
    b = auto_settings(7.0 * y + 1234.0)
    assert a["iterations"] == b["iterations"] and a["tv"] == pytest.approx(b["tv"], rel=0.05)


def test_rule_is_monotonic_and_bounded():
    photons = np.geomspace(1, 1e6, 40)
    its = [DEFAULT_RULE.iterations(p) for p in photons]
    tvs = [DEFAULT_RULE.tv(p) for p in photons]
    assert its == sorted(its) and tvs == sorted(tvs, reverse=True)
    assert min(its) >= 15 and max(its) <= 60 and 0.001 <= min(tvs) and max(tvs) <= 0.03
    # noisier images get fewer iterations and more TV than the old fixed 30 / 0.002
    assert DEFAULT_RULE.iterations(150) < 30 and DEFAULT_RULE.tv(150) > 0.002


def test_deconvolve_chooses_settings_and_keeps_explicit_ones():
    y, _ = _camera("mixture", 200, 1.0, 0.0, 0.0, seed=1, shape=(192, 192))
    auto = deconvolve(y.astype(np.float32), optics=Optics(0.75, 0.53, 0.16))
    assert auto.settings["auto"] == ["iterations", "tv"] and auto.settings["iterations"] < 30
    assert auto.settings["tv"] > 0.002 and 100 < auto.settings["estimated_photons"] < 400
    fixed = deconvolve(y.astype(np.float32), iterations=3, tv=0.0, psf_map=auto.psf_map)
    assert fixed.settings == {"iterations": 3, "tv": 0.0}


def test_noise_estimation_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="image"):
        estimate_noise(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="NaN"):
        estimate_noise(np.full((16, 16), np.nan))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3)), min_size=3, max_size=20)
       .filter(lambda pts: len({p[0] for p in pts}) > 1))
def test_theil_sen_matches_scipy(points):
    """The noise fit's Theil–Sen line is scipy.stats.theilslopes' (slope and 'separate' intercept)."""
    from scipy.stats import theilslopes
    x, y = np.array(points).T
    slope, intercept = theil_sen(x, y)
    ref = theilslopes(y, x)
    np.testing.assert_allclose([slope, intercept], [ref[0], ref[1]], rtol=1e-9, atol=1e-9)


def test_a_run_does_not_import_scipy_stats():
    """scipy.stats costs 40 MB of resident memory: a deconvolution must not import it (issue 15's memory)."""
    import subprocess
    import sys
    code = ("import sys, numpy as np; from fiji_bridge import deconvolve; "
            "from fiji_bridge.simulation.specimens import GENERATORS; "
            "img = np.random.default_rng(0).poisson(500 * GENERATORS['cells']((128, 128), np.random.default_rng(1)) + 20); "
            "deconvolve(img.astype('f4'), iterations=2); print('scipy.stats' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
