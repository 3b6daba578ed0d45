"""The bundled models: they load, their configs validate, and each reaches an accuracy floor on a fixed
held-out set, so a broken or badly trained model can never ship. Floors sit below the metrics measured at
release time (``metrics`` in each model's JSON config).

The default model (the envelope model, v2) reads defocus 0-1.6 waves RMS at any sampling 0.10-0.60 with a
context window; its near-focus companion (v1.1, 0-0.35 waves at one sampling) takes over where the default
reads little defocus (`fiji_bridge.estimation.psf_map.blend_near_focus`)."""
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from fiji_bridge.estimation.model import PSFModel, default_model_path
from fiji_bridge.estimation.model_config import ModelConfig
from training.__main__ import DEFAULT_CONFIG, NEAR_FOCUS_CONFIG
from training.config import TrainingConfig
from training.evaluate import heldout_set, uncertainty_coverage
from training.metrics import regression_metrics

# near-focus model: (photons, parameter) -> (min R², min accuracy)
NEAR_FOCUS_FLOORS = {            # measured at release (v1.1) on this set: (0.81, 0.70) and (0.88, 0.73)
    (np.inf, "defocus"): (0.74, 0.60),
    (1000.0, "defocus"): (0.80, 0.63),
}
# default (envelope) model: photons -> (max defocus RMSE in waves RMS, min Spearman) over readable patches;
# measured at release (v2.1) on this set: (0.166, 0.942) noise-free, (0.130, 0.956) at 1000 photons
# (v2.0, on the held-out set of its own stage: (0.174, 0.936), (0.140, 0.950))
ENVELOPE_FLOORS = {np.inf: (0.20, 0.91), 1000.0: (0.16, 0.93)}


@pytest.fixture(scope="module")
def model():
    return PSFModel()


@pytest.fixture(scope="module")
def near_focus(model):
    return model.near_focus


def test_bundled_files_and_config(model, near_focus):
    path = default_model_path()
    bundled = sorted(path.parent.glob("*.onnx"))
    assert {p.name for p in bundled} >= {path.name, near_focus.path.name}
    assert sum(p.stat().st_size for p in bundled) < 20e6             # ONNX files <= 20 MB in all (issue 12)
    cfg = ModelConfig.load(path.with_suffix(".json"))
    assert cfg.names == ["defocus", "astigmatism_0", "astigmatism_45"] and cfg.parameters[0].low == 0
    assert cfg.metrics, "the shipped config must carry its held-out metrics"
    assert cfg.sampling_range == (0.1, 0.6) and cfg.parameters[0].high >= 1.5
    # the runtime configs and the training configs agree: no constants duplicated between them
    for runtime, training in ((cfg, DEFAULT_CONFIG), (near_focus.config, NEAR_FOCUS_CONFIG)):
        train_cfg = TrainingConfig.load(training).model
        assert train_cfg.optics == runtime.optics and train_cfg.patch_size == runtime.patch_size
        # the same parameters, apart from the σ calibration fitted after training (`training evaluate --store`)
        assert [replace(p, sigma_scale=1.0) for p in train_cfg.parameters] == \
            [replace(p, sigma_scale=1.0) for p in runtime.parameters]
    assert cfg.parameters[0].sigma_scale != 1.0 and cfg.metrics["sigma_calibration"]["defocus"]["n"] > 1000
    assert near_focus.config.metrics and near_focus.config.names == cfg.names


@pytest.mark.parametrize("photons", sorted(ENVELOPE_FLOORS))
def test_default_model_accuracy_floor_on_heldout_patches(model, photons):
    cfg = TrainingConfig.load(DEFAULT_CONFIG)
    batch = heldout_set(cfg, photons, 192, seed=777)
    pred = model.predict_inputs(batch.inputs)
    readable = batch.informative & ~batch.beyond
    assert readable.mean() > 0.5
    rmse_max, rho_min = ENVELOPE_FLOORS[photons]
    err = pred.params[readable, 0] - batch.labels[readable, 0]
    rho = stats.spearmanr(pred.params[readable, 0], batch.labels[readable, 0])[0]
    assert np.sqrt(np.mean(err ** 2)) <= rmse_max and rho >= rho_min, (np.sqrt(np.mean(err ** 2)), rho)
    assert np.mean((pred.info > 0.5) == batch.informative) > 0.85
    # blur beyond the range is said: the range head flags most of it, and little else
    beyond = pred.beyond[batch.informative] > 0.5
    assert np.mean(beyond == batch.beyond[batch.informative]) > 0.85
    cov = uncertainty_coverage(pred.params[readable, 0], pred.std[readable, 0], batch.labels[readable, 0])
    assert 0.4 <= cov["within_1_sigma"] <= 0.9, cov


@pytest.mark.parametrize("photons", sorted({k[0] for k in NEAR_FOCUS_FLOORS}))
def test_near_focus_model_accuracy_floor_on_heldout_patches(near_focus, photons):
    cfg = TrainingConfig.load(NEAR_FOCUS_CONFIG)
    batch = heldout_set(cfg, photons, 160, seed=777)
    pred = near_focus.predict(batch.inputs[:, 0])
    flag = batch.informative
    assert flag.mean() > 0.5
    for (level, name), (r2_min, acc_min) in NEAR_FOCUS_FLOORS.items():
        if level != photons:
            continue
        k = near_focus.config.names.index(name)
        m = regression_metrics(pred.params[flag, k], batch.labels[flag, k], near_focus.config.accuracy_tolerance)
        assert m["r2"] >= r2_min and m["accuracy"] >= acc_min, (name, m)
    # the information flag separates flat patches from structured ones
    assert np.mean((pred.info > 0.5) == flag) > 0.85
    # the predicted σ is honest (1000-patch held-out sets: 59-71 % within 1 σ, 91-97 % within 2 σ)
    for k in range(len(near_focus.config.names)):
        cov = uncertainty_coverage(pred.params[flag, k], pred.std[flag, k], batch.labels[flag, k])
        assert 0.5 <= cov["within_1_sigma"] <= 0.85 and cov["within_2_sigma"] >= 0.82, (k, cov)


@pytest.mark.parametrize("which", ["default", "near_focus"])
def test_int8_copies_run_on_the_cpu_and_read_like_the_float_networks(which):
    """Each bundled config names an int8 copy (`python -m training quantize`); on the CPU it is what runs,
    and on held-out patches its parameters stay within a few hundredths of a wave of the float network's."""
    path = default_model_path()
    if which == "near_focus":
        path = path.with_name(ModelConfig.load(path.with_suffix(".json")).near_focus_model)
    auto, fp = PSFModel(path), PSFModel(path, precision="float")
    assert auto.precision == "int8" and fp.precision == "float"
    assert auto.network_path.stat().st_size < 0.5 * fp.network_path.stat().st_size
    cfg = TrainingConfig.load(DEFAULT_CONFIG if which == "default" else NEAR_FOCUS_CONFIG)
    # measured 0.0013-0.0016 waves RMS (near focus, range 0.35) and ~1 % of the range (default, range 1.6)
    tolerance = 0.005 if which == "near_focus" else 0.03
    for photons in (np.inf, 200.0):
        batch = heldout_set(cfg, photons, 160, seed=778)
        q, f = auto.predict_inputs(batch.inputs), fp.predict_inputs(batch.inputs)
        flag = batch.informative if batch.beyond is None else batch.informative & ~batch.beyond
        rms = np.sqrt(np.mean((q.params[flag] - f.params[flag]) ** 2, axis=0))
        assert rms.max() < tolerance, rms
        assert np.mean((q.info > 0.5) == (f.info > 0.5)) > 0.97
        # neither is better by chance: the int8 error against the truth stays within 5 % of the float's
        err = [np.sqrt(np.mean((p.params[flag, 0] - batch.labels[flag, 0]) ** 2)) for p in (q, f)]
        assert err[0] <= 1.05 * err[1] + 0.002, err
