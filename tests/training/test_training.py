"""Training pipeline on tiny configs (the shipped model's quality is checked in test_shipped_model.py)."""
import json

import numpy as np
import pytest
import torch
from scipy.signal import fftconvolve

from fiji_bridge.estimation.model import PSFModel
from fiji_bridge.optics.psf import psf_batch
from fiji_bridge.simulation.specimens import GENERATORS
from training.__main__ import DEFAULT_CONFIG, NEAR_FOCUS_CONFIG
from training.__main__ import main as training_main
from training.config import TrainingConfig
from training.evaluate import NOISE_LEVELS, calibration, evaluate, sigma_calibration, uncertainty_coverage
from training.export import export_onnx
from training.network import PSFRegressor, loss_terms
from training.sources import TRAIN_IMAGES
from training.synthesis import synthesize
from training.train import load_checkpoint, train


@pytest.fixture
def tiny_cfg():
    d = json.loads(NEAR_FOCUS_CONFIG.read_text())
    d["model"].update(patch_size=32, psf_size=15)
    d["train"].update(steps=6, batch_size=8, checkpoint_every=3, workers=0, widths=[4, 8, 8, 8, 8])
    return TrainingConfig.from_dict(d)


def test_synthesis_reproducible_from_seed(tiny_cfg):
    a = synthesize(tiny_cfg, np.random.default_rng(5), 6)
    b = synthesize(tiny_cfg, np.random.default_rng(5), 6)
    c = synthesize(tiny_cfg, np.random.default_rng(6), 6)
    np.testing.assert_array_equal(a.inputs, b.inputs)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.inputs, c.inputs)


def test_labels_match_the_applied_psf(tiny_cfg):
    """Re-blur check: the label's PSF and the recorded camera reproduce the clean and the noisy patch."""
    m = tiny_cfg.model
    b = synthesize(tiny_cfg, np.random.default_rng(1), 8, photons=np.inf)
    psfs = psf_batch(m.optics, m.nolls, b.labels, m.psf_size)
    reblurred = fftconvolve(b.sharp, psfs, mode="valid", axes=(1, 2))
    bg, c = b.background[:, None, None], b.contrast[:, None, None]
    np.testing.assert_allclose(b.clean, np.clip(1000.0 * (bg + c * reblurred), 0, None), rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(b.counts, b.clean)
    # a different label does not fit
    wrong = psf_batch(m.optics, m.nolls, b.labels[::-1], m.psf_size)
    assert not np.allclose(fftconvolve(b.sharp, wrong, mode="valid", axes=(1, 2)), reblurred, atol=1e-3)
    # noisy patches: counts scatter around the clean image as Poisson + read noise
    n = synthesize(tiny_cfg, np.random.default_rng(1), 8, photons=500.0)
    var = n.clean + n.read_noise[:, None, None] ** 2
    z = (n.counts - n.clean) / np.sqrt(var)
    assert abs(z.mean()) < 0.05 and 0.9 < z.std() < 1.1
    kinds = set(n.kinds) | set(b.kinds)
    assert kinds and kinds <= set(GENERATORS) | set(TRAIN_IMAGES) | {"flat"}


def test_labels_within_ranges_and_blank_patches_flagged(tiny_cfg):
    tiny_cfg.synthesis.blank_fraction = 0.5
    b = synthesize(tiny_cfg, np.random.default_rng(2), 64)
    for k, p in enumerate(tiny_cfg.model.parameters):
        assert b.labels[:, k].min() >= p.low and b.labels[:, k].max() <= p.high
    flat = b.sharp.std(axis=(1, 2)) == 0
    assert flat.sum() > 10 and not b.informative[flat].any()
    assert b.informative[~flat].mean() > 0.3       # small 32-px patches at low photon counts are often too noisy


def test_heldout_split_differs_from_train(tiny_cfg):
    tr = synthesize(tiny_cfg, np.random.default_rng(3), 4, split="train")
    ho = synthesize(tiny_cfg, np.random.default_rng(3), 4, split="heldout")
    assert not np.array_equal(tr.sharp, ho.sharp)


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(tiny_cfg):
    torch.manual_seed(0)
    b = synthesize(tiny_cfg, np.random.default_rng(0), 16, photons=np.inf)
    x = torch.from_numpy(b.inputs)
    y = torch.from_numpy(tiny_cfg.model.normalize(b.labels))
    info = torch.from_numpy(b.informative)
    net = PSFRegressor(3, widths=(8, 8, 16, 16, 16))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = loss_terms(net(x), y, info)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


def test_train_resume_export_and_ort_equivalence(tiny_cfg, tmp_path):
    run = tmp_path / "run"
    train(tiny_cfg, run, progress=False, max_steps=3)
    _, _, step = load_checkpoint(run / "checkpoint.pt")
    assert step == 3
    train(tiny_cfg, run, progress=False)                      # resumes from step 3 to 6
    model, cfg, step = load_checkpoint(run / "checkpoint.pt")
    assert step == 6
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 6
    diff = export_onnx(model, cfg.model, tmp_path / "m.onnx")
    assert diff < 1e-4
    loaded = PSFModel(tmp_path / "m.onnx")
    assert loaded.config.names == cfg.model.names and loaded.config.patch_size == 32
    patches = np.random.default_rng(0).random((5, 32, 32)).astype(np.float32)
    pred = loaded.predict(patches)
    assert pred.params.shape == (5, 3) and np.all((pred.info >= 0) & (pred.info <= 1))


def test_resume_with_a_different_config_is_refused(tiny_cfg, tmp_path):
    train(tiny_cfg, tmp_path, progress=False, max_steps=1)
    tiny_cfg.train.lr = 1.0
    with pytest.raises(ValueError, match="different config"):
        train(tiny_cfg, tmp_path, progress=False)


@pytest.mark.parametrize("mutate, key", [
    (lambda d: d["model"]["parameters"].append({"name": "x", "noll": 4, "low": 0, "high": 1, "bogus": 1}), "bogus"),
    (lambda d: d["noise"].update(photons=[100, 10]), "photons"),
    (lambda d: d["train"].update(learning_rate=1), "learning_rate"),
    (lambda d: d["model"].update(patch_size=24), "patch_size"),
    (lambda d: d.update(extra={}), "extra"),
])
def test_training_config_errors(mutate, key, tmp_path, capsys):
    d = json.loads(NEAR_FOCUS_CONFIG.read_text())
    mutate(d)
    with pytest.raises(ValueError, match=key):
        TrainingConfig.from_dict(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    assert training_main(["train", "--config", str(path), "--out", str(tmp_path / "r")]) == 2
    assert key in capsys.readouterr().err
    assert not (tmp_path / "r").exists()                       # failed before any work


def test_beyond_at_top_is_written_only_where_it_is_used():
    """Configs without the option serialise as before it existed (checkpoints compare configs on resume);
    one that sets it keeps it through a round trip."""
    plain = TrainingConfig.load("training/configs/envelope_smooth_c.json")
    assert "beyond_at_top" not in plain.to_dict()["train"]
    saved = json.loads(open("training/checkpoints/envelope_smooth_c/training_config.json").read())
    assert json.loads(json.dumps(plain.to_dict()["train"])) == saved["train"]
    top = TrainingConfig.load("training/configs/envelope_top.json")
    assert top.train.beyond_at_top and top.to_dict()["train"]["beyond_at_top"] is True
    assert TrainingConfig.from_dict(top.to_dict()).train.beyond_at_top


def test_runtime_package_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys, fiji_bridge.pipeline, fiji_bridge.cli, fiji_bridge.estimation.psf_map; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_export_cli_can_widen_the_patch(tiny_cfg, tmp_path, capsys):
    """`python -m training export --patch-size N`: the same weights read N-px patches (fully convolutional
    network with global pooling); the config records both sizes; a patch below the PSF size is refused."""
    train(tiny_cfg, tmp_path / "run", progress=False, max_steps=1)
    ckpt = str(tmp_path / "run" / "checkpoint.pt")
    assert training_main(["export", "--checkpoint", ckpt, "-o", str(tmp_path / "w.onnx"), "--patch-size", "48"]) == 0
    wide = PSFModel(tmp_path / "w.onnx")
    assert wide.config.patch_size == 48 and wide.config.training_data["patch_size"] == 32
    assert wide.predict(np.random.default_rng(1).random((3, 48, 48)).astype(np.float32)).params.shape == (3, 3)
    assert training_main(["export", "--checkpoint", ckpt, "-o", str(tmp_path / "x.onnx"), "--patch-size", "9"]) == 2
    assert not (tmp_path / "x.onnx").exists()
    # a new output folder is made; a missing checkpoint is one line, not a traceback
    assert training_main(["export", "--checkpoint", ckpt, "-o", str(tmp_path / "new" / "m.onnx")]) == 0
    assert (tmp_path / "new" / "m.json").exists()
    assert training_main(["export", "--checkpoint", str(tmp_path / "none.pt"), "-o", str(tmp_path / "n.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "Traceback" not in "".join(err)


def test_calibration_bins_show_a_range_the_estimate_cannot_read():
    true = np.linspace(0.0, 0.35, 701)
    perfect = calibration(true, true, 0.0, 0.35)["bins"]
    assert [b["median"] for b in perfect] == sorted(b["median"] for b in perfect)
    assert all(b["true"][0] <= b["median"] <= b["true"][1] for b in perfect)
    assert sum(b["n"] for b in perfect) == true.size
    flat = calibration(np.where(true < 0.1, 0.03, true), true, 0.0, 0.35)["bins"]
    assert flat[0]["median"] == flat[1]["median"] == 0.03


def test_uncertainty_coverage_of_a_calibrated_and_an_overconfident_sigma():
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 1, 20000)
    pred = true + rng.normal(0, 0.1, true.size)
    honest = uncertainty_coverage(pred, np.full(true.size, 0.1), true)
    assert abs(honest["within_1_sigma"] - 0.683) < 0.02 and abs(honest["within_2_sigma"] - 0.954) < 0.01
    assert uncertainty_coverage(pred, np.full(true.size, 0.02), true)["within_2_sigma"] < 0.4


def test_sigma_calibration_finds_the_factor_that_makes_sigma_honest():
    rng = np.random.default_rng(1)
    err = rng.normal(0, 0.1, 40000)
    fit = sigma_calibration({"defocus": [np.abs(err[:20000]) / 0.05, np.abs(err[20000:]) / 0.05]})["defocus"]
    assert fit["factor"] == pytest.approx(2.0, rel=0.03)           # σ reported at half the true spread
    assert fit["within_1_sigma_before"] < 0.45 and fit["n"] == 40000
    # scaled by the factor, the same σ is honest
    assert uncertainty_coverage(err, np.full(err.size, 0.05 * fit["factor"]), 0 * err)["within_1_sigma"] == \
        pytest.approx(0.683, abs=0.005)


def test_evaluate_reports_per_kind_and_calibration(tmp_path):
    """The held-out report of the bundled model: metrics per level, per specimen kind, calibration, files."""
    cfg = TrainingConfig.load(DEFAULT_CONFIG)
    summary = evaluate(None, cfg, n=40, out_dir=tmp_path, chunk=20)
    assert set(summary["levels"]) == set(NOISE_LEVELS)
    level = summary["levels"]["noise-free"]
    assert sum(m["defocus"]["n"] for m in level["by_kind"].values()) == level["defocus"]["n"]
    assert set(level["by_kind"]) <= set(GENERATORS) | {"cell", "immunohistochemistry", "gravel"}
    assert level["calibration"]["parameter"] == "defocus"
    assert set(level["uncertainty"]) == set(level["by_kind"][next(iter(level["by_kind"]))])
    assert json.loads((tmp_path / "metrics.json").read_text())["levels"]["50 photons"]["defocus"]["n"] > 0
    assert (tmp_path / "scatter.png").stat().st_size > 10_000
    fit = summary["sigma_calibration"]["defocus"]
    assert fit["factor"] > 0 and fit["n"] == sum(summary["levels"][lv]["uncertainty"]["defocus"]["n"]
                                                 for lv in NOISE_LEVELS)


def test_quantize_cli_writes_an_int8_copy_the_runtime_picks(tiny_cfg, tmp_path, capsys):
    """`python -m training quantize`: an int8 file beside the float one, named in its config; the runtime
    runs it on the CPU ('auto'), keeps the input layer and the heads in float, and still reads patches
    like the float network (a 1-step tiny model: loose bound); precision errors name the parameter."""
    from training.quantize import float_nodes
    train(tiny_cfg, tmp_path / "run", progress=False, max_steps=1)
    model, cfg, _ = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    export_onnx(model, cfg.model, tmp_path / "m.onnx")
    assert PSFModel(tmp_path / "m.onnx").precision == "float"          # no int8 copy yet
    with pytest.raises(ValueError, match="precision: .* no int8 copy"):
        PSFModel(tmp_path / "m.onnx", precision="int8")
    cfg_path = tmp_path / "tiny.json"
    cfg_path.write_text(json.dumps(tiny_cfg.to_dict()))
    assert training_main(["quantize", "--model", str(tmp_path / "m.onnx"), "--config", str(cfg_path), "-n", "64"]) == 0
    assert (tmp_path / "m.int8.onnx").is_file()
    auto, fp = PSFModel(tmp_path / "m.onnx"), PSFModel(tmp_path / "m.onnx", precision="float")
    assert auto.precision == "int8" and auto.config.int8_model == "m.int8.onnx"
    kept = float_nodes(tmp_path / "m.onnx")
    assert any("Gemm" in n for n in kept) and any("Conv" in n for n in kept)
    x = synthesize(tiny_cfg, np.random.default_rng(3), 32, split="heldout").inputs[:, 0]
    diff = np.abs(auto.predict(x).params - fp.predict(x).params)
    assert diff.max() < 0.1 * (tiny_cfg.model.parameters[0].high - tiny_cfg.model.parameters[0].low) + 0.02
    with pytest.raises(ValueError, match="precision must be"):
        PSFModel(tmp_path / "m.onnx", precision="half")
    (tmp_path / "m.int8.onnx").unlink()         # a config copied without its int8 file: the float network runs
    assert PSFModel(tmp_path / "m.onnx").precision == "float"
    with pytest.raises(ValueError, match="precision: the int8 copy m.int8.onnx .* is missing"):
        PSFModel(tmp_path / "m.onnx", precision="int8")


def test_evaluate_cli_stores_the_metrics_and_the_sigma_calibration(tiny_cfg, tmp_path):
    """`python -m training evaluate --store`: the config gets the metrics and, per parameter, the σ factor
    fitted on the held-out patches; the runtime's σ is then honest on those patches (68 % within 1 σ)."""
    train(tiny_cfg, tmp_path / "run", progress=False, max_steps=1)
    model, cfg, _ = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    export_onnx(model, cfg.model, tmp_path / "m.onnx")
    cfg_path = tmp_path / "tiny.json"
    cfg_path.write_text(json.dumps(tiny_cfg.to_dict()))
    args = ["evaluate", "--model", str(tmp_path / "m.onnx"), "--config", str(cfg_path), "-n", "40", "--store"]
    assert training_main([*args, "--out", str(tmp_path / "ev")]) == 0
    stored = PSFModel(tmp_path / "m.onnx").config
    fit = stored.metrics["sigma_calibration"]
    assert [q.sigma_scale for q in stored.parameters] == [round(fit[q.name]["factor"], 4) for q in stored.parameters]
    # evaluated again with the calibrated σ, the fitted factor is 1 (same patches, same seeds)
    again = evaluate(tmp_path / "m.onnx", tiny_cfg, n=40)["sigma_calibration"]
    for q in stored.parameters:
        assert again[q.name]["factor"] == pytest.approx(1.0, abs=0.01)
