"""Models with a context window and a sampling range (the envelope design): config, synthesis, resampling and
the PSF-map plumbing, checked with small probe networks whose outputs are known functions of their input."""
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from fiji_bridge.estimation.model import PSFModel
from fiji_bridge.estimation.model_config import ModelConfig, ParameterSpec
from fiji_bridge.optics import Optics
from fiji_bridge.estimation.psf_map import estimate_psf_map, psf_size_for
from fiji_bridge.estimation.resample import (TRUNCATE, antialias_sigma, area_coordinates, block_mean, interpolate_linear,
                                              resample, resample_rows, window_block_means)
from training.config import TrainingConfig
from training.export import export_onnx
from training.network import PSFRegressor, loss_terms
from training.synthesis import camera_image, synthesize
from training.train import build_model

ENVELOPE = "training/configs/envelope.json"


def _small_cfg() -> TrainingConfig:
    d = json.loads(open(ENVELOPE).read())
    d["model"].update(patch_size=32, psf_size=33, context_factor=3)
    d["train"].update(batch_size=4, workers=0, widths=[4, 8, 8, 8, 8])
    return TrainingConfig.from_dict(d)


def test_sqrt_scale_round_trip_and_std_jacobian():
    p = ParameterSpec("defocus", 4, 0.0, 1.6, scale="sqrt")
    v = np.array([0.0, 0.01, 0.35, 1.0, 1.6])
    np.testing.assert_allclose(p.denormalize(p.normalize(v)), v, atol=1e-12)
    # more of [-1, 1] near focus than a linear scale gives
    assert p.normalize(0.1) > ParameterSpec("d", 4, 0.0, 1.6).normalize(0.1) + 0.3
    # σ conversion is the derivative of denormalize
    n, h = 0.2, 1e-6
    slope = (p.denormalize(n + h) - p.denormalize(n - h)) / (2 * h)
    assert p.std_to_physical(n, 0.01) == pytest.approx(0.01 * slope, rel=1e-5)
    with pytest.raises(ValueError, match="scale"):
        ParameterSpec("d", 4, 0.0, 1.0, scale="log")
    # the held-out σ calibration multiplies the physical σ, and only it
    calibrated = ParameterSpec("defocus", 4, 0.0, 1.6, scale="sqrt", sigma_scale=1.3)
    assert calibrated.std_to_physical(n, 0.01) == pytest.approx(1.3 * p.std_to_physical(n, 0.01), rel=1e-6)
    assert calibrated.denormalize(n) == p.denormalize(n)
    for bad in (0, -1.0, "2", True):
        with pytest.raises(ValueError, match="sigma_scale"):
            ParameterSpec("d", 4, 0.0, 1.0, sigma_scale=bad)


def test_envelope_config_round_trip():
    cfg = TrainingConfig.load(ENVELOPE)
    m = cfg.model
    assert m.input_channels == 3 and m.sampling == pytest.approx(0.25, abs=1e-3)
    again = ModelConfig.from_dict(m.to_dict())
    assert again.to_dict() == m.to_dict()
    with pytest.raises(ValueError, match="sampling_range"):
        ModelConfig.from_dict({**m.to_dict(), "sampling_range": [0.3, 0.6]})    # excludes its own sampling


def test_resample_preserves_mean_and_is_identity_at_same_shape(rng):
    x = rng.random((60, 90)).astype(np.float32) + 1
    np.testing.assert_array_equal(resample(x, x.shape), x)
    for shape in ((30, 45), (150, 225), (61, 89)):
        assert resample(x, shape).mean() == pytest.approx(x.mean(), rel=1e-3)
    np.testing.assert_allclose(block_mean(np.arange(36.0).reshape(6, 6), 3), [[7, 10], [25, 28]])


@pytest.mark.parametrize("n_out", [128, 118, 97, 95, 64, 200])
def test_resample_applies_the_antialiasing_gaussian_wherever_it_is_not_the_identity(rng, n_out):
    """Skipping the Gaussian where its kernel is one tap (shrinking by < 1.33x) changes nothing: the result
    equals scipy's filter followed by the interpolation, at every factor; from 1.33x on the filter acts."""
    from scipy import ndimage
    x = rng.random((128, 40)).astype(np.float32)
    sigma = (128 / n_out - 1) / 2
    filtered = ndimage.gaussian_filter1d(x, sigma, axis=0, mode="reflect", truncate=TRUNCATE) if n_out < 128 else x
    reference = interpolate_linear(filtered, area_coordinates(128, n_out), axis=0)
    np.testing.assert_array_equal(resample(x, (n_out, 40)), reference)
    np.testing.assert_array_equal(resample_rows(x, (n_out, 40), 3, n_out - 2), reference[3:n_out - 2])
    assert (antialias_sigma(128, n_out) > 0) == (n_out < 128 / (1 + 1 / 3))
    if antialias_sigma(128, n_out):
        assert not np.array_equal(filtered, x)


@pytest.mark.parametrize("rows", [[0], [0, 7, 8, 13]])
@pytest.mark.parametrize("starts", [[0], [0, 64, 128, 142], [5, 7, 9, 11], [1, 2, 3, 4, 5, 6, 30]])
def test_window_block_means_equal_block_mean_of_each_window(rng, rows, starts):
    band = rng.random((61, 190)).astype(np.float32)
    got = window_block_means(band, np.array(rows), np.array(starts), 48, 3)
    want = np.stack([block_mean(band[y:y + 48, x:x + 48], 3) for y in rows for x in starts])
    assert got.shape == want.shape == (len(rows) * len(starts), 16, 16) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    # bit for bit numpy's mean over each block's rows, then over its columns (the int8 network's input rounding
    # and the map's thresholds make even one-ulp changes visible in a map)
    exact = np.stack([band[y:y + 48, x:x + 48].reshape(16, 3, 48).mean(axis=1).reshape(16, 16, 3).mean(axis=2)
                      for y in rows for x in starts])
    np.testing.assert_array_equal(got, exact)
    with pytest.raises(ValueError, match="exceed"):
        window_block_means(band, np.array(rows), np.array([150]), 48, 3)
    with pytest.raises(ValueError, match="exceed"):
        window_block_means(band, np.array([14]), np.array(starts), 48, 3)


def test_camera_image_integrates_pixels_and_round_trips(rng):
    x = rng.random((96, 96)) + 1
    coarse = camera_image(x, 3.0)
    assert coarse.shape == (32, 32)
    # a 3x camera pixel averages 3x3 model pixels (interior)
    assert coarse[10, 10] == pytest.approx(x[30:33, 30:33].mean(), rel=1e-6)     # centre (10 + ½)·3 − ½ = 31
    assert camera_image(x, 0.5).shape == (192, 192)


def test_context_synthesis_shapes_labels_and_beyond_range():
    cfg = _small_cfg()
    b = synthesize(cfg, np.random.default_rng(3), 8)
    assert b.inputs.shape == (8, 3, 32, 32) and np.all(np.isfinite(b.inputs))
    np.testing.assert_allclose(b.inputs[:, 2].std(axis=(1, 2)), 0, atol=1e-6)        # constant sampling channel
    np.testing.assert_allclose(b.inputs[:, 2, 0, 0], np.log(b.sampling / cfg.model.sampling), rtol=1e-5)
    lo, hi = cfg.synthesis.camera_sampling
    assert np.all((b.sampling >= lo) & (b.sampling <= hi))
    params = np.zeros((8, 3))
    params[:, 0] = np.linspace(0, 2.0, 8)
    fixed = synthesize(cfg, np.random.default_rng(3), 8, params=params)
    np.testing.assert_array_equal(fixed.beyond, params[:, 0] > 1.6)
    # the regression loss ignores beyond-range samples, the range head learns them
    net = build_model(cfg)
    out = net(torch.from_numpy(fixed.inputs))
    assert len(out) == 4
    target = torch.from_numpy(cfg.model.normalize(fixed.labels))
    info = torch.ones(8, dtype=torch.bool)
    beyond = torch.from_numpy(fixed.beyond)
    terms = loss_terms(out, target, info, beyond)
    moved = target.clone()
    moved[beyond] += 5.0                       # labels of beyond-range samples do not enter the regression
    assert float(loss_terms(out, moved, info, beyond)["mse"]) == pytest.approx(float(terms["mse"]))
    assert "range_bce" in terms
    # beyond_at_top: they are regressed to the top of the range (normalised target 1), wherever beyond it they lie
    top = loss_terms(out, target, info, beyond, beyond_at_top=True)
    expected = ((out[0] - target.clamp(max=1.0)) ** 2).sum(1).mean()
    assert float(top["mse"]) == pytest.approx(float(expected), rel=1e-5)
    further = target.clone()
    further[beyond, 0] += 5.0
    assert float(loss_terms(out, further, info, beyond, beyond_at_top=True)["mse"]) == pytest.approx(float(top["mse"]))
    assert float(top["mse"]) != pytest.approx(float(terms["mse"]))


class Probe(nn.Module):
    """Defocus output = tanh(mean of the sampling channel); constant information and range logits."""

    def __init__(self, range_logit: float):
        super().__init__()
        self.range_logit = range_logit

    def forward(self, x):
        b = x.shape[0]
        s = x[:, 2].mean(dim=(1, 2))
        params = torch.stack([torch.tanh(s), torch.zeros(b), torch.zeros(b)], 1)
        return params, torch.full((b, 3), -4.0), torch.full((b, 1), 5.0), torch.full((b, 1), self.range_logit)


@pytest.fixture
def probe_model(tmp_path):
    def make(range_logit: float) -> PSFModel:
        cfg = TrainingConfig.load(ENVELOPE).model
        path = tmp_path / f"probe{range_logit}.onnx"
        export_onnx(Probe(range_logit), cfg, path)
        return PSFModel(path)
    return make


def test_map_reads_the_camera_sampling_and_resamples(probe_model, rng):
    net = probe_model(-10.0)
    image = rng.random((200, 160)).astype(np.float32)
    for pixel in (0.08, 0.16, 0.40):
        optics = Optics(na=0.75, wavelength=0.53, pixel_size=pixel)
        m = estimate_psf_map(image, net, optics=optics)
        expected = net.config.denormalize(np.array([[np.tanh(np.log(pixel * 0.75 / 0.53 / net.config.sampling)),
                                                     0, 0]]))[0, 0]
        np.testing.assert_allclose(m.raw[0], expected, rtol=1e-4, atol=1e-6)
        assert not m.out_of_range.any() and m.reliable.all()
        # centres in image pixels, inside the image, spaced by the stride
        assert 0 < m.centres_y[0] < m.centres_y[-1] < image.shape[0]
        scale = pixel * 0.75 / 0.53 / net.config.sampling
        p = net.config.patch_size
        assert m.stride == round(p / scale)            # default: one patch of the model (default_stride)
        stack, labels, meta = m.to_stack()
        assert labels[-3:] == ["defocus_sigma", "out_of_range", "reliable"] and stack.shape[0] == len(labels)


def test_out_of_range_is_flagged_and_warned(probe_model, rng):
    net = probe_model(10.0)
    image = rng.random((160, 160)).astype(np.float32)
    with pytest.warns(UserWarning, match="beyond 1.6 waves"):
        m = estimate_psf_map(image, net, optics=Optics(na=0.75, wavelength=0.53, pixel_size=0.16))
    assert m.out_of_range.all() and m.info["out_of_range_fraction"] == 1.0
    np.testing.assert_allclose(m.parameter("defocus"), 1.6)
    assert m.to_stack()[0][m.to_stack()[1].index("out_of_range")].min() == 1.0
    # PSFs wide enough for 1.6 waves at this sampling: radius 4√3·1.6 + 3 λ/NA over pixel·NA/λ
    assert m.psf_size >= 2 * (4 * np.sqrt(3) * 1.6 + 3) / (0.16 * 0.75 / 0.53)


class SpotProbe(Probe):
    """Defocus as `Probe`; the range head fires on patches holding a spot far above the rest (a normalised
    maximum above 20 standard deviations)."""

    def forward(self, x):
        params, log_var, info, _ = super().forward(x)
        return params, log_var, info, (x[:, 0].amax(dim=(1, 2)) - 20.0)[:, None]


def test_flagged_patches_take_their_readable_neighbours_estimates(tmp_path, rng):
    """Patches flagged beyond the range are marked and warned about, but the map deconvolves them with the
    estimates of the readable patches around them, never at the top of the range spread to their neighbours
    (a false flag on a smooth specimen collapsed a restoration that way)."""
    cfg = TrainingConfig.load(ENVELOPE).model
    export_onnx(SpotProbe(0.0), cfg, tmp_path / "spot.onnx")
    net = PSFModel(tmp_path / "spot.onnx")
    image = rng.random((320, 320)).astype(np.float32)
    image[200, 240] = image[260, 290] = 1e4                      # two spots in the lower right
    with pytest.warns(UserWarning, match="flagged .out_of_range. and given the estimates of their nearest"):
        m = estimate_psf_map(image, net, optics=Optics(na=0.75, wavelength=0.53, pixel_size=0.16))
    assert 0 < m.out_of_range.mean() < 0.5
    readable = m.raw[0][~m.out_of_range]
    assert np.ptp(readable) < 1e-6 and readable[0] < 1.0              # the probe's one value everywhere else
    np.testing.assert_allclose(m.raw[0][m.out_of_range], 1.6)           # the raw slice says "at least the top"
    np.testing.assert_allclose(m.parameter("defocus"), readable[0], atol=1e-6)   # what is deconvolved
    assert not m.reliable[m.out_of_range].any()


class SigmaProbe(Probe):
    """Defocus as `Probe`; a large predicted σ on patches holding a spot far above the rest."""

    def forward(self, x):
        params, log_var, info, rng_logit = super().forward(x)
        spot = (x[:, 0].amax(dim=(1, 2)) > 20.0).float()[:, None]
        return params, log_var + 8.0 * spot, info, rng_logit


@pytest.mark.parametrize("spot_columns, warned", [(range(100, 320, 50), True), (range(290, 320, 50), False)])
def test_a_map_mostly_filled_from_few_readable_patches_says_so(tmp_path, rng, spot_columns, warned):
    """When most informative patches are too uncertain to read and take their neighbours' estimates, the map
    says so in one line with the share; when few are, it stays quiet."""
    cfg = TrainingConfig.load(ENVELOPE).model
    export_onnx(SigmaProbe(-10.0), cfg, tmp_path / "sigma.onnx")
    net = PSFModel(tmp_path / "sigma.onnx")
    image = rng.random((320, 320)).astype(np.float32)
    for y in range(20, 320, 40):
        for x in spot_columns:
            image[y, x] = 1e4
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = estimate_psf_map(image, net, optics=Optics(na=0.75, wavelength=0.53, pixel_size=0.16))
    said = [str(w.message) for w in caught if "too uncertain to read" in str(w.message)]
    share = float(m.filled.sum() / m.informative.sum())
    assert (share >= 0.5) == warned and 0 < share < 1
    assert len(said) == int(warned)
    if warned:
        assert f"{share:.0%} of the informative patches" in said[0] and f"other {int(m.reliable.sum())} patches" in said[0]


def test_sampling_outside_the_envelope_is_refused(probe_model, rng):
    with pytest.raises(ValueError, match=r"pixel·NA/λ = 0\.05.*pixel size"):
        estimate_psf_map(rng.random((400, 400)), probe_model(0.0), optics=Optics(na=0.75, wavelength=0.53,
                                                                                  pixel_size=0.035))


def test_psf_size_for_grows_with_blur_and_is_bounded():
    small = psf_size_for(np.zeros((3, 2, 2)), ["defocus", "astigmatism_0", "astigmatism_45"], 0.25, 999)
    big = psf_size_for(np.full((3, 2, 2), 1.5), ["defocus", "astigmatism_0", "astigmatism_45"], 0.25, 999)
    assert small % 2 == big % 2 == 1 and small < big
    assert psf_size_for(np.full((1, 2, 2), 1.5), ["defocus"], 0.1, 101) == 101


def test_context_network_exports(tmp_path):
    cfg = _small_cfg()
    net = PSFRegressor(3, widths=(4, 8, 8, 8, 8), in_channels=3, range_output=True)
    diff = export_onnx(net, cfg.model, tmp_path / "ctx.onnx")
    assert diff < 1e-4
    model = PSFModel(tmp_path / "ctx.onnx")
    pred = model.predict(np.random.default_rng(0).random((5, 32, 32)), np.random.default_rng(1).random((5, 32, 32)),
                         0.3)
    assert pred.params.shape == (5, 3) and pred.beyond.shape == (5,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="context"):
            model.predict(np.zeros((2, 32, 32)))


def test_focal_shift_samples_carry_the_label_of_their_depth():
    """With ``focal_shift_fraction`` 1 every sample is blurred by the non-paraxial pupil of some NA/n at the
    depth `defocus_to_z` gives its label; the old configs' dict (and so their checkpoints) is unchanged."""
    from fiji_bridge.optics import defocus_to_z
    from fiji_bridge.optics.psf import psf_batch
    from training.synthesis import _RELATIVE_NA_LEVELS, focal_shift_psfs

    cfg = _small_cfg()
    assert "focal_shift_fraction" not in cfg.to_dict()["synthesis"]
    d = cfg.to_dict()
    d["synthesis"]["focal_shift_fraction"] = 1.0
    fs = TrainingConfig.from_dict(d)
    labels = np.array([[0.9, 0.1, -0.05]] * 6)
    psfs = focal_shift_psfs(fs, labels, np.random.default_rng(0))
    m = fs.model
    levels = np.linspace(*fs.synthesis.relative_na, _RELATIVE_NA_LEVELS)
    # each PSF is one of the levels' renderings of that depth
    matched = []
    for psf in psfs:
        errs = []
        for s in levels:
            o = Optics(na=float(s), wavelength=m.optics.wavelength, n=1.0, pixel_size=m.sampling * m.optics.wavelength / s)
            ref = psf_batch(o, m.nolls, np.array([[0.0, 0.1, -0.05]]), m.psf_size,
                            focal_shift=np.array([float(defocus_to_z(0.9, o))]))[0]
            errs.append(np.abs(ref - psf).max())
        matched.append(min(errs))
    np.testing.assert_allclose(matched, 0, atol=1e-7)
    b = synthesize(fs, np.random.default_rng(3), 4, params=labels[:4])
    assert np.all(np.isfinite(b.inputs)) and b.labels.shape == (4, 3)


class ConstantProbe(nn.Module):
    """Constant normalised parameters ``values`` for every patch; informative; within range unless
    ``range_logit`` (the out-of-range logit of models with a range head) says otherwise."""

    def __init__(self, values, range_output: bool, range_logit: float = -10.0):
        super().__init__()
        self.values, self.range_output = torch.tensor(values, dtype=torch.float32), range_output
        self.range_logit = range_logit

    def forward(self, x):
        b = x.shape[0]
        params = self.values.expand(b, -1) + 0 * x.mean(dim=(1, 2, 3))[:, None]
        out = (params, torch.full((b, 3), -4.0), torch.full((b, 1), 5.0))
        return (*out, torch.full((b, 1), self.range_logit)) if self.range_output else out


@pytest.fixture
def cascade(tmp_path):
    """An envelope-shaped model reading ``wide`` waves of defocus everywhere, with a near-focus v1 model
    reading ``near`` (both constant), blended over [0.35, 0.5]."""
    from fiji_bridge.estimation.model import default_model_path

    def make(wide: float, near: float) -> PSFModel:
        v1 = ModelConfig.load(default_model_path().with_name("semiblind_near_focus.json"))
        v1 = ModelConfig.from_dict({**v1.to_dict(), "int8_model": None})
        export_onnx(ConstantProbe(v1.normalize(np.array([near, 0.05, 0.0])), False), v1, tmp_path / "near.onnx")
        env = TrainingConfig.load(ENVELOPE).model
        env = ModelConfig.from_dict({**env.to_dict(), "near_focus_model": "near.onnx", "near_focus_blend": [0.35, 0.5]})
        path = tmp_path / f"wide{wide}.onnx"
        export_onnx(ConstantProbe(env.normalize(np.array([wide, 0.0, 0.0])), True), env, path)
        return PSFModel(path)
    return make


@pytest.mark.parametrize("wide, weight", [(0.2, 1.0), (0.35, 1.0), (0.425, 0.5), (0.5, 0.0), (1.2, 0.0)])
def test_near_focus_model_takes_over_where_the_wide_model_reads_little_defocus(cascade, rng, wide, weight):
    net = cascade(wide, 0.1)
    image = rng.random((256, 256)).astype(np.float32)
    m = estimate_psf_map(image, net, optics=Optics(na=0.75, wavelength=0.53, pixel_size=0.16))
    expected = weight * np.array([0.1, 0.05, 0.0]) + (1 - weight) * np.array([wide, 0.0, 0.0])
    np.testing.assert_allclose(m.parameters.reshape(3, -1).T, np.broadcast_to(expected, (m.parameters[0].size, 3)),
                               atol=2e-3)
    assert m.info["near_focus"]["weighted_fraction"] == pytest.approx(weight, abs=1e-3)
    np.testing.assert_allclose(m.raw[0], wide, atol=2e-3)          # raw: the wide model's own estimates


def context_cascade(tmp_path, range_logit: float, near_sampling_range=None) -> PSFModel:
    """An envelope-shaped model reading 0.2 waves everywhere over a near-focus context model (0–0.35 waves,
    range head) reading 0.1 with the out-of-range logit ``range_logit``."""
    near_cfg = TrainingConfig.load(ENVELOPE).model.to_dict()
    near_cfg["parameters"][0].update(high=0.35, scale="linear")
    if near_sampling_range is not None:
        near_cfg["sampling_range"] = list(near_sampling_range)
    near_cfg = ModelConfig.from_dict({**near_cfg, "int8_model": None})
    export_onnx(ConstantProbe(near_cfg.normalize(np.array([0.1, 0.05, 0.0])), True, range_logit), near_cfg,
                tmp_path / "near.onnx")
    env = TrainingConfig.load(ENVELOPE).model
    env = ModelConfig.from_dict({**env.to_dict(), "near_focus_model": "near.onnx", "near_focus_blend": [0.35, 0.5]})
    export_onnx(ConstantProbe(env.normalize(np.array([0.2, 0.0, 0.0])), True), env, tmp_path / "wide.onnx")
    return PSFModel(tmp_path / "wide.onnx")


@pytest.mark.parametrize("logit, weight", [(-10.0, 1.0), (-1.0, 1 / (1 + np.exp(-1.0))), (10.0, 0.0)])
def test_a_near_focus_model_with_a_range_head_hands_over_where_it_says_the_blur_is_beyond_it(tmp_path, rng, logit,
                                                                                             weight):
    """A near-focus context model reading 0.1 with P(beyond) = sigmoid(logit), under a wide model reading 0.2
    (full weight by its own ramp): the near model keeps 1 − P of the weight, and says so without a warning
    (its out-of-range patches are the blend's business)."""
    net = context_cascade(tmp_path, logit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = estimate_psf_map(rng.random((256, 256)).astype(np.float32), net,
                             optics=Optics(na=0.75, wavelength=0.53, pixel_size=0.16))
    expected = weight * np.array([0.1, 0.05, 0.0]) + (1 - weight) * np.array([0.2, 0.0, 0.0])
    np.testing.assert_allclose(m.parameters.reshape(3, -1).T, np.broadcast_to(expected, (m.parameters[0].size, 3)),
                               atol=2e-3)
    assert m.info["near_focus"]["weighted_fraction"] == pytest.approx(weight, abs=1e-3)
    assert m.info["near_focus"]["beyond_its_range_fraction"] == (1.0 if logit > 0 else 0.0)


def test_a_near_focus_context_model_is_skipped_outside_its_sampling_range(tmp_path, rng):
    net = context_cascade(tmp_path, -10.0, near_sampling_range=(0.24, 0.3))
    m = estimate_psf_map(rng.random((256, 256)).astype(np.float32), net,
                         optics=Optics(na=0.75, wavelength=0.53, pixel_size=0.16))      # sampling 0.226
    np.testing.assert_allclose(m.parameters[0], 0.2, atol=2e-3)
    assert m.info["near_focus"] == "not used: it reads samplings 0.24-0.3, this image 0.226"


def test_near_focus_model_is_skipped_where_it_cannot_read_the_sampling(cascade, rng):
    net = cascade(0.2, 0.1)
    image = rng.random((256, 256)).astype(np.float32)
    m = estimate_psf_map(image, net, optics=Optics(na=0.75, wavelength=0.53, pixel_size=0.4))   # 2.5x coarser
    np.testing.assert_allclose(m.parameters[0], 0.2, atol=2e-3)
    assert m.info["near_focus"].startswith("not used: it reads samplings")


def test_near_focus_config_errors(cascade, tmp_path):
    env = TrainingConfig.load(ENVELOPE).model.to_dict()
    for change, match in (({"near_focus_model": "near.onnx"}, "both or neither"),
                          ({"near_focus_model": "../near.onnx", "near_focus_blend": [0.3, 0.5]}, "near_focus_model"),
                          ({"near_focus_model": "near.onnx", "near_focus_blend": [0.5, 0.3]}, "near_focus_blend"),
                          ({"near_focus_model": "near.onnx", "near_focus_blend": "0.3"}, "near_focus_blend")):
        with pytest.raises(ValueError, match=match):
            ModelConfig.from_dict({**env, **change})
    net = cascade(0.2, 0.1)
    (tmp_path / "near.onnx").unlink()
    with pytest.raises(ValueError, match="near-focus model near.onnx .* missing"):
        estimate_psf_map(np.random.default_rng(0).random((256, 256)), net)


class ContentProbe(nn.Module):
    """Outputs that depend on the patch and on its context window (so a wrong window would show)."""

    def forward(self, x):
        b = x.shape[0]
        fine, wide = x[:, 0], x[:, 1]
        params = torch.tanh(torch.stack([(fine * wide).mean(dim=(1, 2)), wide[:, :8].mean(dim=(1, 2)),
                                         fine[:, :, -8:].mean(dim=(1, 2))], 1))
        return params, torch.full((b, 3), -4.0), torch.full((b, 1), 5.0), torch.full((b, 1), -10.0)


@pytest.mark.parametrize("pixel", [0.1766, 0.12, 0.3], ids=["model-sampling", "finer", "coarser"])
def test_context_map_reads_a_lazy_image_in_bounded_bands_and_equals_the_whole_image(tmp_path, monkeypatch, pixel):
    """An image larger than memory is read band by band (rows resampled with `resample_rows`, reflect-padded
    for the context window as the whole image would be): the same map, bit for bit, with bounded reads."""
    import fiji_bridge.estimation.psf_map as psf_map
    from tests.conftest import RecordingImage

    cfg = TrainingConfig.load(ENVELOPE).model
    export_onnx(ContentProbe(), cfg, tmp_path / "probe.onnx")
    net = PSFModel(tmp_path / "probe.onnx")
    optics = Optics(na=0.75, wavelength=0.53, pixel_size=pixel)
    image = (np.random.default_rng(5).random((700, 330)) * 100).astype(np.uint16)
    whole = estimate_psf_map(image, net, optics=optics)
    monkeypatch.setattr(psf_map, "BAND_PIXELS", 330 * 400)
    lazy = RecordingImage(image)
    banded = estimate_psf_map(lazy, net, optics=optics)
    assert len(lazy.reads) >= 3 and max(lazy.reads) < 600
    np.testing.assert_array_equal(banded.raw, whole.raw)
    np.testing.assert_array_equal(banded.parameters, whole.parameters)


def test_resample_rows_equal_the_whole_resampled_image():
    from fiji_bridge.estimation.resample import resample_rows

    rng = np.random.default_rng(0)
    for (h_in, w_in), (h, w) in (((300, 200), (120, 80)), ((300, 200), (700, 450)), ((97, 50), (31, 20)),
                                 ((50, 40), (173, 90)), ((1000, 30), (77, 30)), ((64, 64), (64, 64))):
        x = rng.random((h_in, w_in)).astype(np.float32)
        full = resample(x, (h, w))
        for r0, r1 in ((0, h), (0, 5), (3, 17), (h - 9, h), (h // 2, h // 2 + 1), (h // 3, 2 * h // 3)):
            np.testing.assert_array_equal(resample_rows(x, (h, w), r0, r1), full[r0:r1])


@pytest.mark.parametrize("k, weight", [(0.0, 0.0), (1.0, None)])
def test_near_focus_sigma_reads_the_blend_lower_by_that_many_predicted_sigma(cascade, tmp_path, rng, k, weight):
    """The wide model reads 0.5 (weight 0 on [0.35, 0.5]); read k σ lower the near-focus model gets
    (0.5 − (0.5 − kσ)) / 0.15 of the weight. The wide model's own values are never shifted."""
    net = cascade(0.5, 0.1)
    cfg = ModelConfig.from_dict({**net.config.to_dict(), "near_focus_sigma": k})
    cfg.save(net.path.with_suffix(".json"))
    net = PSFModel(net.path)
    sigma = float(net.predict_inputs(np.zeros((1, 3, 64, 64), np.float32)).std[0, 0])
    w = weight if weight is not None else min(k * sigma / 0.15, 1.0)
    m = estimate_psf_map(rng.random((256, 256)).astype(np.float32), net,
                         optics=Optics(na=0.75, wavelength=0.53, pixel_size=0.16))
    np.testing.assert_allclose(m.parameters[0], w * 0.1 + (1 - w) * 0.5, atol=3e-3)
    with pytest.raises(ValueError, match="near_focus_sigma"):
        ModelConfig.from_dict({**cfg.to_dict(), "near_focus_sigma": -1})
