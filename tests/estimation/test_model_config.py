import json

import numpy as np
import pytest

from fiji_bridge.estimation.model import PSFModel, default_model_path
from fiji_bridge.estimation.model_config import ModelConfig, normalize_patches


def _cfg_dict():
    return json.loads(default_model_path().with_suffix(".json").read_text())


def test_round_trip(tmp_path):
    cfg = ModelConfig.from_dict(_cfg_dict())
    cfg.save(tmp_path / "m.json")
    again = ModelConfig.load(tmp_path / "m.json")
    assert again.to_dict() == cfg.to_dict()
    values = np.array([[0.1, -0.05, 0.02], [0.3, 0.1, -0.1]])
    np.testing.assert_allclose(cfg.denormalize(cfg.normalize(values)), values, atol=1e-6)
    assert np.all(np.abs(cfg.normalize(np.array([[p.low for p in cfg.parameters]]))) == 1)
    # a σ calibration travels with the parameter; an uncalibrated one writes nothing (older files unchanged)
    d = _cfg_dict()
    d["parameters"][0]["sigma_scale"] = 1.25
    d["parameters"][1].pop("sigma_scale", None)
    calibrated = ModelConfig.from_dict(d)
    assert calibrated.to_dict()["parameters"][0]["sigma_scale"] == 1.25
    assert "sigma_scale" not in calibrated.to_dict()["parameters"][1]


@pytest.mark.parametrize("mutate, key", [
    (lambda d: d["parameters"][0].update(low=1.0, high=0.0), "defocus"),
    (lambda d: d["parameters"][1].update(noll=0), "Noll"),
    (lambda d: d.update(patch_size=50), "patch_size"),
    (lambda d: d.update(psf_size=40), "psf_size"),
    (lambda d: d.update(colour="red"), "colour"),
    (lambda d: d["parameters"][0].update(wobble=1), "wobble"),
    (lambda d: d["parameters"][0].update(sigma_scale=-2), "sigma_scale"),
    (lambda d: d.pop("optics"), "optics"),
    (lambda d: d["optics"].update(na=2.0), "na"),
    (lambda d: d.update(int8_model="../elsewhere/m.int8.onnx"), "int8_model"),
    (lambda d: d.update(int8_model="m.int8.bin"), "int8_model"),
])
def test_config_errors_name_the_key(mutate, key):
    d = _cfg_dict()
    mutate(d)
    with pytest.raises(ValueError, match=key):
        ModelConfig.from_dict(d)


def test_normalize_patches_is_per_patch_standardisation(rng):
    p = rng.random((5, 16, 16)) * np.arange(1, 6)[:, None, None] + 7
    out = normalize_patches(p)
    assert out.shape == (5, 1, 16, 16) and out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=(-2, -1)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(-2, -1)), 1, atol=1e-4)
    assert np.all(np.isfinite(normalize_patches(np.zeros((2, 8, 8)))))


def test_bad_model_files(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        PSFModel(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match=".onnx"):
        PSFModel(tmp_path / "model.pt")
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not an onnx file")
    (tmp_path / "bogus.json").write_text(default_model_path().with_suffix(".json").read_text())
    with pytest.raises(ValueError, match="ONNX"):
        PSFModel(bogus)
    # a valid ONNX file whose config claims another patch size
    good = tmp_path / "other.onnx"
    good.write_bytes(default_model_path().read_bytes())
    d = _cfg_dict()
    d["patch_size"] = 2 * d["patch_size"]
    (tmp_path / "other.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="patch_size"):
        PSFModel(good)


def test_gpu_demand_without_cuda_provider_is_refused():
    import onnxruntime as ort
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA execution provider")
    with pytest.raises(RuntimeError, match="CUDA"):
        PSFModel(device="gpu")
    assert PSFModel(device="auto").provider == "CPUExecutionProvider"
