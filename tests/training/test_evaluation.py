"""Evaluation metrics and baselines (training/metrics.py, training/baselines.py): fast checks."""
import numpy as np
import pytest

from fiji_bridge.estimation.model_config import ModelConfig, ParameterSpec
from fiji_bridge.optics import Optics
from fiji_bridge.optics.psf import psf_batch, zernike_psf
from fiji_bridge.estimation.psf_map import PSFMap
from fiji_bridge.restoration.sv_convolution import convolve_sv
from training.baselines import deconvblind, initial_psf, oracle_deconvolve, true_psf_map
from training.metrics import map_mask, regression_metrics, snr_db, ssim, straddling_patches

OPT = Optics(na=0.75, wavelength=0.53, pixel_size=0.16)


def specimen(rng, n=96):
    """Blobs and lines in [0, 1] on a dim background."""
    img = np.zeros((n, n))
    img[tuple(rng.integers(4, n - 4, (2, 40)))] = 1.0
    img[n // 3, 10:n - 10] = 0.7
    img[10:n - 10, 2 * n // 3] = 0.7
    from scipy import ndimage
    return ndimage.gaussian_filter(img, 0.7) * 4 + 0.05


def test_snr_known_value_and_affine_invariance(rng):
    x = rng.standard_normal(4096)
    x -= x.mean()
    n = rng.standard_normal(4096)
    n -= n.mean()
    n -= (n @ x) / (x @ x) * x                 # orthogonal to x and to constants
    n *= np.sqrt((x @ x) / (n @ n))            # same energy as x: residual of the best fit = |x|²/2
    y = x + n
    assert snr_db(y, x) == pytest.approx(10 * np.log10(2), abs=1e-9)
    for a, b in [(3.0, 7.0), (-0.5, 100.0), (1e-3, -2.0)]:
        assert snr_db(a * y + b, x) == pytest.approx(10 * np.log10(2), abs=1e-9)
    assert snr_db(2 * x + 1, x) > 200           # exact match up to rounding
    assert snr_db(x + 0.1 * n, x) > snr_db(x + n, x)


def test_ssim_perfect_and_shape_check(rng):
    x = rng.random((32, 32))
    assert ssim(5 * x + 2, x) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        snr_db(np.zeros((3, 3)), np.ones((3, 4)))


def test_straddling_and_regression_metrics():
    centres = np.array([31.5, 63.5, 95.5, 127.5, 159.5, 191.5, 223.5])
    assert straddling_patches(centres, 256, 64).tolist() == [False, False, False, True, False, False, False]
    mask = map_mask(np.ones((7, 7), bool), centres, centres, (256, 256), 64, quadrants=True)
    assert mask.sum() == 36 and not mask[3].any() and not mask[:, 3].any()
    m = regression_metrics(np.array([0.0, 0.1, 0.2]), np.array([0.0, 0.1, 0.3]), 0.05)
    assert m["accuracy"] == pytest.approx(2 / 3) and m["rmse"] == pytest.approx(np.sqrt(0.01 / 3))
    assert np.isnan(regression_metrics(np.zeros(3), np.zeros(3), 0.1)["r2"])


def test_blind_baseline_improves_and_keeps_psf_normalised(rng):
    truth = specimen(rng) * 200
    psf = zernike_psf(OPT, {"defocus": 0.2}, size=21)
    blurred = rng.poisson(convolve_sv(truth, psf)).astype(np.float32)
    res = deconvblind(blurred, 21, iterations=15, init="gaussian", init_width=2.0, snapshots=(5, 15))
    assert res.psf.shape == (21, 21) and res.psf.min() >= 0
    assert res.psf.sum() == pytest.approx(1.0, abs=1e-5)
    assert sorted(res.snapshots) == [5, 15]
    assert snr_db(res.image, truth) > snr_db(blurred, truth) + 0.5
    assert initial_psf(9, "disk", 2.0).sum() == pytest.approx(1.0)


def _map_for(params: np.ndarray, cy: np.ndarray, cx: np.ndarray, cfg: ModelConfig, shape) -> PSFMap:
    """A PSFMap of given parameters (stand-in for a CNN map: only its geometry is used by the oracle)."""
    grid = params.shape[1:]
    return PSFMap(parameters=params, raw=params, std=np.zeros_like(params), confidence=np.ones(grid, np.float32),
                  informative=np.ones(grid, bool), centres_y=cy, centres_x=cx, names=cfg.names, units=cfg.units,
                  nolls=cfg.nolls, patch_size=cfg.patch_size, stride=cfg.patch_size // 2, optics=cfg.optics,
                  psf_size=cfg.psf_size, image_shape=shape)


def test_oracle_beats_input_on_quadrants(rng):
    cfg = ModelConfig(parameters=[ParameterSpec("defocus", 4, 0.0, 0.35)], patch_size=32, psf_size=21, optics=OPT)
    n = 128
    truth = (specimen(rng, n) * 200).astype(np.float32)
    quad = np.array([[0.05, 0.25], [0.3, 0.15]])
    psfs = psf_batch(OPT, [4], quad.reshape(4, 1), 21)
    blurred = np.zeros_like(truth)
    h = n // 2
    for k, (qy, qx) in enumerate(np.ndindex(2, 2)):
        region = (slice(qy * h, (qy + 1) * h), slice(qx * h, (qx + 1) * h))
        blurred[region] = convolve_sv(truth, psfs[k])[region]
    blurred = rng.poisson(blurred).astype(np.float32)
    centres = np.array([h / 2 - 0.5, h + h / 2 - 0.5])
    true_map = quad[None].astype(np.float32)
    estimated = _map_for(np.full_like(true_map, 0.2), centres, centres, cfg, (n, n))
    oracle = true_psf_map(estimated, true_map, centres, centres)
    assert np.array_equal(oracle.parameters, true_map)
    restored = oracle_deconvolve(blurred, oracle, iterations=20, tv=0.002, grid=(2, 2))
    assert snr_db(restored, truth) > snr_db(blurred, truth) + 0.5


def _evaluation_script():
    """benchmarks/evaluate_pipeline.py as a module (benchmarks/ is not a package)."""
    import importlib.util
    import sys
    from pathlib import Path
    if "evaluate_pipeline" in sys.modules:
        return sys.modules["evaluate_pipeline"]
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "evaluate_pipeline.py"
    spec = importlib.util.spec_from_file_location("evaluate_pipeline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["evaluate_pipeline"] = module          # dataclasses need their module registered
    spec.loader.exec_module(module)
    return module


def test_script_simulation_is_the_library_protocol_with_other_specimens():
    from fiji_bridge.simulation import simulate
    from fiji_bridge.estimation.model import PSFModel
    ev = _evaluation_script()
    cfg = PSFModel().config
    for layout, lib in [("quadrants", simulate.simulate_quadrants), ("tilted", simulate.simulate_tilted)]:
        a, b = ev.simulate_case(cfg, layout, "mixture", 3, (128, 128), 300.0), lib(cfg, 3, (128, 128), 300.0)
        assert np.array_equal(a.blurred, b.blurred) and np.array_equal(a.true_map, b.true_map)
        c = ev.simulate_case(cfg, layout, "beads", 3, (128, 128), 300.0)
        assert not np.array_equal(c.truth, a.truth) and c.true_map.shape == a.true_map.shape
    assert simulate._specimen.__name__ == "_specimen"       # the hook is restored


def test_evaluation_script_smoke(tmp_path):
    import json
    ev = _evaluation_script()
    result = ev.main(["--seeds", "1", "--specimens", "cells", "--size", "128", "--timing-size", "0",
                      "--blind-iterations", "3,5", "--blind-inits", "gaussian:2", "--iterations", "5",
                      "--stride", "16", "--out", str(tmp_path)])
    assert len(result["cases"]) == 2
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["protocol"]["stride"] == 16
    assert set(saved["summary"]["overall"]) == set("abcde")
    assert all(np.isfinite(v) for c in saved["cases"] for v in c["snr_db"].values())
    assert "| (a) ours" in (tmp_path / "evaluation.md").read_text()
    assert (tmp_path / "evaluation.png").stat().st_size > 1000


def test_reading_gains_are_one_number_per_na_against_the_na_average():
    """`training reading`'s summary: rows whose readings above 0.6 are the NA/n-average's times 1.2, 1.0, 0.8
    give exactly those gains; columns at or below 0.6 waves do not count; noise in one entry moves its row's
    gain little."""
    from training.reading_by_na import gains
    average = np.array([0.5, 0.9, 1.3, 1.7])
    rows = [list(np.where(average > 0.6, 0.6 + g * (average - 0.6), average + d)) for g, d in
            ((1.2, 0.05), (1.0, 0.0), (0.8, -0.05))]
    np.testing.assert_allclose(gains((0.3, 0.6, 0.9), (0.5, 0.8, 1.2, 1.6), rows), [1.2, 1.0, 0.8])
    rows[0][2] += 0.03
    g = gains((0.3, 0.6, 0.9), (0.5, 0.8, 1.2, 1.6), rows)
    assert abs(g[0] - 1.2) < 0.03 and abs(g[1] - 1.0) < 0.02
