"""Non-blind Bayes ceiling and smoothing residual of defocus (training.bounds)."""
import json

import numpy as np
import pytest
from scipy.signal import fftconvolve
from scipy.special import erf

from fiji_bridge.optics.psf import psf_batch
from training.__main__ import NEAR_FOCUS_CONFIG
from training.__main__ import main as training_main
from training.bounds import (bayes_defocus, defocus_grid, defocus_log_posterior, defocus_smoothing_table,
                             nonblind_estimates, smoothing_residual, summarize_bound)
from training.config import TrainingConfig
from training.synthesis import synthesize


@pytest.fixture(scope="module")
def cfg():
    d = json.loads(NEAR_FOCUS_CONFIG.read_text())
    d["model"].update(patch_size=32, psf_size=21)
    return TrainingConfig.from_dict(d)


def test_bayes_estimates_of_a_gaussian_posterior():
    """Posterior mean/variance and the best ±tol window mass against their closed forms."""
    grid = np.linspace(0.0, 0.35, 1401)
    mu, sigma, tol = np.array([0.12, 0.2]), np.array([0.01, 0.03]), 0.03
    lp = -0.5 * ((grid[None] - mu[:, None]) / sigma[:, None]) ** 2
    lp -= np.log(np.exp(lp).sum(1, keepdims=True))
    est = bayes_defocus(lp, grid, tol)
    np.testing.assert_allclose(est["mean"], mu, atol=1e-6)
    np.testing.assert_allclose(est["variance"], sigma**2, rtol=1e-3)
    np.testing.assert_allclose(est["window"], mu, atol=grid[1])
    # the discrete window holds one grid point more than 2·tol: up to step·density of extra mass
    np.testing.assert_allclose(est["accuracy"], erf(tol / (sigma * np.sqrt(2))), atol=4e-3)


def test_posterior_is_calibrated_on_synthetic_patches(cfg):
    """The truth falls inside the central 90 % credible interval about 90 % of the time, and the
    optimal estimate is close to the truth at 2000 photons (the specimen is known)."""
    b = synthesize(cfg, np.random.default_rng(4), 48, split="heldout", photons=2000.0)
    grid = defocus_grid(cfg)
    lp = defocus_log_posterior(b, cfg, grid)
    np.testing.assert_allclose(np.exp(lp).sum(1), 1.0, rtol=1e-9)
    cdf = np.cumsum(np.exp(lp), axis=1)
    k = np.searchsorted(grid, b.labels[:, 0])
    rank = cdf[np.arange(len(k)), np.clip(k, 0, grid.size - 1)]
    inside = (rank > 0.05) & (rank < 0.95)
    assert 0.75 <= inside[b.informative].mean() <= 1.0
    est = nonblind_estimates(b, cfg)
    s = summarize_bound(est, cfg.model.accuracy_tolerance)
    assert s["posterior_mean"]["rmse"] < 0.03 and s["expected"]["r2"] > 0.9


def test_noise_free_patches_have_no_posterior(cfg):
    b = synthesize(cfg, np.random.default_rng(0), 2, photons=np.inf)
    with pytest.raises(ValueError, match="noise-free"):
        defocus_log_posterior(b, cfg, defocus_grid(cfg))


def test_smoothing_explains_defocus_but_cannot_sharpen(cfg):
    """Smoothing the specimen reproduces most of a defocus; it can never undo one."""
    p = psf_batch(cfg.model.optics, ["defocus"], np.array([[0.0], [0.15], [0.3]]), 31)
    assert smoothing_residual(p[0], p[0]) == 0.0
    assert smoothing_residual(p[0], p[1], kernel_size=11) < 0.15
    assert smoothing_residual(p[2], p[0], kernel_size=11) > 0.8
    # a kernel that is itself a blur is recovered exactly
    box = np.zeros((31, 31))
    box[14:17, 14:17] = 1 / 9
    assert smoothing_residual(p[0], fftconvolve(p[0], box[12:19, 12:19], mode="same"), kernel_size=7) < 1e-3
    with pytest.raises(ValueError):
        smoothing_residual(p[0], p[1][:-1, :-1])


def test_astigmatism_makes_near_focus_defocus_more_than_a_smoothing(cfg):
    """Without astigmatism 0 -> 0.05 waves of defocus is almost a smoothing; with 0.08 waves of it the
    blur moves between the astigmatic focal lines, which no non-negative kernel reproduces."""
    d = [0.0, 0.05]
    plain = defocus_smoothing_table(cfg.model.optics, d, 31, kernel_size=11)[0, 1]
    astig = defocus_smoothing_table(cfg.model.optics, d, 31, kernel_size=11, astigmatism=0.08)[0, 1]
    assert plain < 0.1 < 0.3 < astig


def test_bounds_cli_report(tmp_path):
    """`python -m training bounds`: ceiling beside the bundled model on the same patches, focus-only
    metrics with calibration, smoothing tables; one-line error for a missing model."""
    out = tmp_path / "b" / "bounds.json"
    assert training_main(["bounds", "-n", "12", "-o", str(out)]) == 0
    r = json.loads(out.read_text())
    for level in ("1000 photons", "200 photons", "50 photons"):
        v = r["levels"][level]
        assert v["n"] == v["model"]["n"] == v["nonblind_ceiling"]["posterior_mean"]["n"]
    best = r["levels"]["1000 photons"]
    assert best["nonblind_ceiling"]["posterior_mean"]["rmse"] < best["model"]["rmse"]
    assert set(r["focus_only"]) == {"noise-free", "1000 photons", "200 photons", "50 photons"}
    assert len(r["focus_only"]["noise-free"]["bins"]) == 7
    table = r["smoothing_residual"]["from_row_to_column"]["astigmatism_0=0.0"]
    assert table[0][0] is None and 0 < table[0][1] < 0.1
    assert training_main(["bounds", "--model", str(tmp_path / "none.onnx"), "-o", str(out)]) == 2


@pytest.mark.parametrize("n", ["0", "x"])
def test_bounds_cli_refuses_a_bad_sample_count(n, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        training_main(["bounds", "-n", n, "-o", str(tmp_path / "b.json")])
    assert exc.value.code == 2 and "positive integer" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()
