"""The bad-input matrix (issue 13): every way a hostile or careless user feeds SemiBlind bad input.

Command line: exit status 2, exactly one line on stderr, no traceback, no file or temporary file left
behind, the input untouched, and (for options that can be checked up front) no PSF map computed first.
Python API: a ValueError that names the parameter. Cases run in-process (`fiji_bridge.cli.main`), one
through the installed console script.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

import fiji_bridge
from fiji_bridge import Optics, convolve_sv, deconvolve, estimate_psf_map, richardson_lucy, zernike_psf
from fiji_bridge.cli import main
from fiji_bridge.estimation.model import PSFModel, default_model_path
from fiji_bridge.estimation.model_config import ModelConfig
from fiji_bridge.pipeline import image_optics
from fiji_bridge.simulation.simulate import simulate_quadrants, simulate_tilted
from fiji_bridge.io.tiff import read_image

ROOT = Path(__file__).resolve().parents[2]
SIZE = 128


def specimen(size: int = SIZE, seed: int = 0) -> np.ndarray:
    """A structured blurred specimen with photon noise: the map finds blur information everywhere."""
    from scipy.signal import fftconvolve

    from fiji_bridge.simulation.specimens import mixture
    rng = np.random.default_rng(seed)
    psf = zernike_psf(fiji_bridge.default_optics(), {4: 0.15}, size=31)
    clean = fftconvolve(mixture((size, size), rng), psf, mode="same") * 400 + 20
    return rng.poisson(np.clip(clean, 0, None)).astype(np.uint16)


def imagej_tiff(path: Path, data, pixel_size=0.16, unit="micron", resolution=None) -> Path:
    res = resolution or ((1 / pixel_size, 1 / pixel_size) if pixel_size else None)
    tifffile.imwrite(path, data, imagej=True, resolution=res, metadata={"unit": unit} if res else {})
    return path


def broken_model(folder: Path, name: str, value: float) -> Path:
    """An ONNX model with the bundled model's config whose every output is ``value`` (NaN: a broken model)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    cfg = ModelConfig.load(default_model_path().with_suffix(".json"))
    p, c = cfg.patch_size, getattr(cfg, "input_channels", 1)
    nodes = [helper.make_node("Flatten", [cfg.input_name], ["flat"], axis=1)]
    inits, outputs = [], []
    for out in cfg.outputs:
        width = len(cfg.parameters) if out in ("params", "log_var") else 1
        inits.append(numpy_helper.from_array(np.full((c * p * p, width), value, np.float32), f"w_{out}"))
        nodes.append(helper.make_node("MatMul", ["flat", f"w_{out}"], [out]))
        outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", width]))
    graph = helper.make_graph(nodes, "broken", [helper.make_tensor_value_info(
        cfg.input_name, TensorProto.FLOAT, ["batch", c, p, p])], outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    shutil.copyfile(default_model_path().with_suffix(".json"), path.with_suffix(".json"))
    return path


def model_with_config(folder: Path, name: str, mutate) -> Path:
    """The bundled ONNX file next to a copy of its JSON config changed by ``mutate(dict)``."""
    path = folder / f"{name}.onnx"
    shutil.copyfile(default_model_path(), path)
    d = json.loads(default_model_path().with_suffix(".json").read_text())
    mutate(d)
    path.with_suffix(".json").write_text(json.dumps(d))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Every bad (and one good) input file, in one folder whose bytes must never change."""
    d = tmp_path_factory.mktemp("inputs")
    good = specimen()
    imagej_tiff(d / "good.tif", good)
    imagej_tiff(d / "uncalibrated.tif", good, pixel_size=None)
    nan = good.astype(np.float32)
    nan[5, 7] = np.nan
    imagej_tiff(d / "nan.tif", nan)
    inf = good.astype(np.float32)
    inf[9, 3] = np.inf
    imagej_tiff(d / "inf.tif", inf)
    imagej_tiff(d / "constant.tif", np.full((SIZE, SIZE), 7, np.uint16))
    imagej_tiff(d / "zeros.tif", np.zeros((SIZE, SIZE), np.float32))
    imagej_tiff(d / "one_pixel.tif", np.ones((1, 1), np.uint16))
    imagej_tiff(d / "one_row.tif", np.ones((1, 300), np.uint16))
    imagej_tiff(d / "tiny.tif", good[:10, :10])
    tifffile.imwrite(d / "rgb.tif", np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    tifffile.imwrite(d / "stack.tif", np.zeros((3, 96, 96), np.uint16), imagej=True)
    tifffile.imwrite(d / "bool.tif", np.zeros((64, 64), bool))
    tifffile.imwrite(d / "complex.tif", np.zeros((64, 64), np.complex64))
    (d / "corrupt.tif").write_bytes(b"II*\x00 this is not an image at all")
    (d / "zero_bytes.tif").write_bytes(b"")
    whole = (d / "good.tif").read_bytes()
    (d / "truncated.tif").write_bytes(whole[:len(whole) // 2])
    import matplotlib.pyplot as plt
    plt.imsave(d / "picture.png", good.astype(float))
    shutil.copyfile(d / "picture.png", d / "png_named.tif")
    imagej_tiff(d / "non_square.tif", good, resolution=(1 / 0.16, 1 / 0.2))
    tifffile.imwrite(d / "non_square.ome.tif", good, metadata={
        "axes": "YX", "PhysicalSizeX": 0.16, "PhysicalSizeY": 0.2})
    imagej_tiff(d / "seconds.tif", good, unit="sec")
    tifffile.imwrite(d / "parsec.ome.tif", good, metadata={
        "axes": "YX", "PhysicalSizeX": 1.6, "PhysicalSizeXUnit": "pc", "PhysicalSizeY": 1.6,
        "PhysicalSizeYUnit": "pc"})

    m = d / "models"
    m.mkdir()
    (m / "model.pt").write_bytes(b"torch")
    (m / "bogus.onnx").write_bytes(b"not an onnx file")
    shutil.copyfile(default_model_path().with_suffix(".json"), m / "bogus.json")
    shutil.copyfile(default_model_path(), m / "no_config.onnx")
    shutil.copyfile(default_model_path(), m / "bad_json.onnx")
    (m / "bad_json.json").write_text("{ not json")
    model_with_config(m, "two_params", lambda c: c.update(parameters=c["parameters"][:2]))
    model_with_config(m, "range_one", lambda c: c.update(pixel_size_range=[1]))
    model_with_config(m, "params_text", lambda c: c.update(parameters="abc"))
    broken_model(m, "nan_model", float("nan"))
    return d


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def no_map(monkeypatch):
    """Fail loudly if a PSF map is computed: options that can be checked up front must be."""
    def forbidden(*args, **kwargs):
        raise AssertionError("the PSF map was computed before the bad option was refused")
    monkeypatch.setattr("fiji_bridge.pipeline.estimate_psf_map", forbidden)
    monkeypatch.setattr("fiji_bridge.estimation.psf_map.estimate_psf_map", forbidden)


IN, OUT, M = "{in}", "{out}", "{in}/models"
GOOD = f"{IN}/good.tif"
PSF = ["psf", "--na", "0.8", "--wavelength", "0.52", "--pixel-size", "0.1"]

# (id, argv, text the error line must contain, the map may be computed before the refusal)
CLI_CASES = [
    # --- bad image files (already refused well before issue 13, kept so they stay so)
    ("nan", ["deconvolve", f"{IN}/nan.tif", "-o", f"{OUT}/o.tif"], "NaN", False),
    ("inf", ["deconvolve", f"{IN}/inf.tif", "-o", f"{OUT}/o.tif"], "NaN or inf", False),
    ("constant", ["deconvolve", f"{IN}/constant.tif", "-o", f"{OUT}/o.tif"], "constant", True),
    ("all-zero", ["psf-map", f"{IN}/zeros.tif", "-o", f"{OUT}/m.tif"], "constant", True),
    ("tiny", ["deconvolve", f"{IN}/tiny.tif", "-o", f"{OUT}/o.tif"], "smaller than one", True),
    ("rgb", ["deconvolve", f"{IN}/rgb.tif", "-o", f"{OUT}/o.tif"], "RGB", False),
    ("stack-blank", ["deconvolve", f"{IN}/stack.tif", "-o", f"{OUT}/o.tif"], "image is constant", False),
    ("bool-tiff", ["deconvolve", f"{IN}/bool.tif", "-o", f"{OUT}/o.tif"], "pixel type", False),
    ("complex-tiff", ["deconvolve", f"{IN}/complex.tif", "-o", f"{OUT}/o.tif"], "pixel type", False),
    ("corrupt", ["deconvolve", f"{IN}/corrupt.tif", "-o", f"{OUT}/o.tif"], "cannot read", False),
    ("zero-bytes", ["deconvolve", f"{IN}/zero_bytes.tif", "-o", f"{OUT}/o.tif"], "cannot read", False),
    ("truncated", ["deconvolve", f"{IN}/truncated.tif", "-o", f"{OUT}/o.tif"], "truncated", False),
    ("truncated-tiled", ["deconvolve", f"{IN}/truncated.tif", "-o", f"{OUT}/o.tif", "--tile", "128"],
     "truncated", False),
    ("png", ["deconvolve", f"{IN}/picture.png", "-o", f"{OUT}/o.tif"], "not a TIFF", False),
    ("png-named-tif", ["psf-map", f"{IN}/png_named.tif", "-o", f"{OUT}/m.tif"], "not a TIFF", False),
    ("missing", ["deconvolve", f"{IN}/missing.tif", "-o", f"{OUT}/o.tif"], "not found", False),
    ("output-is-input", ["deconvolve", GOOD, "-o", GOOD], "overwrite the input", False),
    ("no-output-folder", ["deconvolve", GOOD, "-o", f"{OUT}/none/o.tif"], "output folder", False),
    # item 10: a 1x1 image is too small, not a stack
    ("one-pixel", ["deconvolve", f"{IN}/one_pixel.tif", "-o", f"{OUT}/o.tif"], "too small", False),
    ("one-row", ["psf-map", f"{IN}/one_row.tif", "-o", f"{OUT}/m.tif"], "too small", False),
    # --- bad optics
    ("na>=n", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--na", "1.2"], "refractive index", False),
    ("undersampled", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--pixel-size", "1.5"], "optics:", True),
    ("na-negative", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--na", "-1"], "--na", False),
    ("na-nan", ["psf-map", GOOD, "-o", f"{OUT}/m.tif", "--na", "nan"], "--na", False),
    ("wavelength-text", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--wavelength", "green"], "--wavelength", False),
    # item 9: an explicit 0 is an error, not "use the default"
    ("pixel-size-0", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--pixel-size", "0"], "--pixel-size", False),
    ("na-0", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--na", "0"], "--na", False),
    ("wavelength-0", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--wavelength", "0"], "--wavelength", False),
    ("n-0-deconvolve", ["psf-map", GOOD, "-o", f"{OUT}/m.tif", "--n", "0"], "--n", False),
    ("n-0-psf", [*PSF, "--n", "0", "-o", f"{OUT}/p.tif"], "--n", False),
    # item 11: non-square pixels and units that are not lengths, as the ImageJ command refuses them
    ("non-square", ["deconvolve", f"{IN}/non_square.tif", "-o", f"{OUT}/o.tif"], "not square", False),
    ("non-square-ome", ["psf-map", f"{IN}/non_square.ome.tif", "-o", f"{OUT}/m.tif"], "not square", False),
    ("unit-seconds", ["deconvolve", f"{IN}/seconds.tif", "-o", f"{OUT}/o.tif"], "not a length", False),
    ("unit-parsec", ["psf-map", f"{IN}/parsec.ome.tif", "-o", f"{OUT}/m.tif"], "not a length", False),
    # --- bad model files
    ("model-missing", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--model", f"{M}/none.onnx"], "not found", False),
    ("model-pt", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--model", f"{M}/model.pt"], ".onnx", False),
    ("model-bogus", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--model", f"{M}/bogus.onnx"], "ONNX", False),
    ("model-no-json", ["psf-map", GOOD, "-o", f"{OUT}/m.tif", "--model", f"{M}/no_config.onnx"],
     "config not found", False),
    ("model-bad-json", ["psf-map", GOOD, "-o", f"{OUT}/m.tif", "--model", f"{M}/bad_json.onnx"], "JSON", False),
    # item 10: messages a user can act on
    ("json-2-params", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--model", f"{M}/two_params.onnx"],
     "does not belong", False),
    ("json-range-1", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--model", f"{M}/range_one.onnx"],
     "pixel_size_range must be two numbers", False),
    ("json-params-text", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--model", f"{M}/params_text.onnx"],
     "parameters must be a list", False),
    ("model-nan", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--model", f"{M}/nan_model.onnx"],
     "produced non-finite output", True),
    # --- item 8: resource guards and up-front validation
    ("iterations-1e9", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--iterations", "1000000000"], "--iterations",
     False),
    ("iterations-0", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--iterations", "0"], "--iterations", False),
    ("iterations-2.5", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--iterations", "2.5"], "--iterations", False),
    ("tv-5", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--tv", "5"], "--tv", False),
    ("tv-nan", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--tv", "nan"], "--tv", False),
    ("grid-0", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--grid", "0x2"], "--grid", False),
    ("grid-text", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--grid", "4by4"], "--grid", False),
    ("grid-huge", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--grid", "1000x1000"], "--grid", False),
    ("grid-too-fine", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--grid", "100x100"], "does not fit", False),
    ("tile-1", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--tile", "1"], "--tile", False),
    ("tile-100", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--tile", "100"], "--tile", False),
    ("stride-0", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--stride", "0"], "--stride", False),
    ("stride-too-large", ["psf-map", GOOD, "-o", f"{OUT}/m.tif", "--stride", "1000"], "stride", True),
    ("device", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--device", "tpu"], "--device", False),
    ("psf-fine-pixels", [*PSF[:-1], "0.001", "-o", f"{OUT}/p.tif"], "FFT grid", False),
    ("psf-huge", [*PSF, "--size", "100001", "-o", f"{OUT}/p.tif"], "FFT grid", False),
    ("psf-even", [*PSF, "--size", "10", "-o", f"{OUT}/p.tif"], "odd", False),
    ("psf-zernike", [*PSF, "--zernike", "4:1", "-o", f"{OUT}/p.tif"], "--zernike", False),
    ("psf-defocus-nan", [*PSF, "--defocus", "nan", "-o", f"{OUT}/p.tif"], "finite", False),
    ("simulate-16", ["simulate", "-o", f"{OUT}/sim", "--size", "16"], "size", False),
    ("simulate-1", ["simulate", "-o", f"{OUT}/sim", "--size", "1"], "size", False),
    ("simulate-0", ["simulate", "-o", f"{OUT}/sim", "--size", "0"], "size", False),
    ("simulate-huge", ["simulate", "-o", f"{OUT}/sim/deeper", "--size", "100001"], "size", False),
    ("simulate-photons-neg", ["simulate", "-o", f"{OUT}/sim", "--photons", "-5"], "photons", False),
    ("simulate-photons-nan", ["simulate", "-o", f"{OUT}/sim", "--photons", "nan"], "photons", False),
    ("simulate-seed-neg", ["simulate", "-o", f"{OUT}/sim", "--seed", "-1"], "seed", False),
    ("batch-iterations-1e9", ["batch", IN, "-o", f"{OUT}/b", "--iterations", "1000000000"], "--iterations", False),
    ("batch-tile-1", ["batch", IN, "-o", f"{OUT}/b", "--tile", "1"], "--tile", False),
    ("usage-missing-output", ["deconvolve", GOOD], "-o/--output", False),
    ("usage-unknown-option", ["deconvolve", GOOD, "-o", f"{OUT}/o.tif", "--sigma", "2"], "--sigma", False),
]


@pytest.mark.parametrize("argv, expected, maps", [pytest.param(a, e, m, id=i) for i, a, e, m in CLI_CASES])
def test_cli_refuses_bad_input(inputs, tmp_path, capsys, request, argv, expected, maps):
    if not maps:
        request.getfixturevalue("no_map")
    out = tmp_path / "out"
    out.mkdir()
    before = _digest(inputs)
    code = main([a.replace("{in}", str(inputs)).replace("{out}", str(out)) for a in argv])
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, err
    assert err.count("\n") == 1 and err.endswith("\n"), f"not exactly one line on stderr: {err!r}"
    assert expected in err and "Traceback" not in err, err
    assert captured.out == ""
    assert list(out.iterdir()) == [], "a file, temporary file or folder was left behind"
    assert _digest(inputs) == before, "an input was modified"


@pytest.mark.parametrize("argv, expected", [
    pytest.param([*PSF, "--size", "100001", "-o", f"{OUT}/p.tif"], "FFT grid", id="psf-huge"),   # was MemoryError
    pytest.param(["deconvolve", f"{IN}/truncated.tif", "-o", f"{OUT}/o.tif"], "cannot read",   # + tifffile's log
                 id="truncated"),
])
def test_cli_process_exit_status_and_one_line(inputs, tmp_path, argv, expected):
    """The command line in a process of its own (where library log records would reach stderr too)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    argv = [a.replace("{in}", str(inputs)).replace("{out}", str(tmp_path)) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "fiji_bridge.cli", *argv], capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and list(tmp_path.iterdir()) == []


def test_warnings_reach_stderr(tmp_path, capsys):
    """An undersampled PSF is written (exit 0), and the user is told so on stderr."""
    assert main([*PSF[:-1], "100", "-o", str(tmp_path / "p.tif"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("semiblind: warning: ") and "Nyquist" in err and err.count("\n") == 1


def test_explicit_pixel_size_overrides_an_unusable_calibration(inputs, tmp_path, capsys):
    """The rule of the ImageJ command: a non-square calibration is refused unless the pixel size is given."""
    assert main(["psf-map", str(inputs / "non_square.tif"), "-o", str(tmp_path / "m.tif"), "--pixel-size", "0.16",
                 "--quiet"]) == 0
    assert (tmp_path / "m.tif").is_file()


# ------------------------------------------------------------------------------------------- API


@pytest.fixture(scope="module")
def image():
    return specimen().astype(np.float32)


API_CASES = [
    ("stride-float", lambda im: deconvolve(im, stride=2.5), "stride"),
    ("map-stride-float", lambda im: estimate_psf_map(im, stride=2.5), "stride"),
    ("map-stride-bool", lambda im: estimate_psf_map(im, stride=True), "stride"),
    ("map-optics-str", lambda im: estimate_psf_map(im, optics="abc"), "optics"),
    ("iterations-auto-typo", lambda im: deconvolve(im, iterations="atuo"), "iterations"),
    ("tv-auto-typo", lambda im: deconvolve(im, tv="Auto "), "tv"),
    ("stride-0", lambda im: deconvolve(im, stride=0), "stride"),
    ("grid-float", lambda im: deconvolve(im, grid=(2.5, 2)), "grid"),
    ("grid-one-number", lambda im: deconvolve(im, grid=4), "grid"),
    ("grid-too-fine", lambda im: deconvolve(im, grid=(100, 100)), "grid"),
    ("iterations-bool", lambda im: deconvolve(im, iterations=True), "iterations"),
    ("iterations-float", lambda im: deconvolve(im, iterations=3.0), "iterations"),
    ("iterations-huge", lambda im: deconvolve(im, iterations=10**9), "iterations"),
    ("tv-nan", lambda im: deconvolve(im, tv=float("nan")), "tv"),
    ("tv-text", lambda im: deconvolve(im, tv="0.01"), "tv"),
    ("tile-small", lambda im: deconvolve(im, tile=1), "tile"),
    ("tile-bool", lambda im: deconvolve(im, tile=True), "tile"),
    ("device", lambda im: deconvolve(im, device="tpu"), "device"),
    ("optics-text", lambda im: deconvolve(im, optics="abc"), "optics"),
    ("optics-dict", lambda im: deconvolve(im, optics={"na": 0.8}), "optics"),
    ("model-number", lambda im: deconvolve(im, model=123), "model"),
    ("psf-map-text", lambda im: deconvolve(im, psf_map="map.tif"), "psf_map"),
    ("image-bool", lambda im: deconvolve(im > im.mean()), "image"),
    ("image-complex", lambda im: deconvolve(im + 1j), "image"),
    ("image-text", lambda im: deconvolve(np.full((64, 64), "a")), "image"),
    ("image-nan", lambda im: deconvolve(np.where(im > 100, np.nan, im)), "image"),
    ("image-empty", lambda im: deconvolve(np.zeros((0, 0))), "image"),
    ("image-1x1", lambda im: deconvolve(np.ones((1, 1))), "image"),
    ("image-3d", lambda im: deconvolve(np.stack([im, im])), "image"),
    ("image-constant", lambda im: deconvolve(np.full((SIZE, SIZE), 3.0)), "image"),
    ("rl-complex", lambda im: richardson_lucy(im + 1j, np.ones((3, 3))), "image"),
    ("rl-bool", lambda im: richardson_lucy(im > 0, np.ones((3, 3))), "image"),
    ("rl-iterations-bool", lambda im: richardson_lucy(im, np.ones((3, 3)), iterations=True), "iterations"),
    ("conv-complex", lambda im: convolve_sv(im.astype(np.complex64), np.ones((3, 3))), "image"),
    ("map-complex", lambda im: estimate_psf_map(im + 0j), "image"),
    ("Optics-bool", lambda im: Optics(na=True, wavelength=0.52, pixel_size=0.1), "na must be"),
    ("Optics-text", lambda im: Optics(na=0.8, wavelength="0.52", pixel_size=0.1), "wavelength"),
    ("Optics-complex", lambda im: Optics(na=0.8, wavelength=0.52, pixel_size=0.1 + 0j), "pixel_size"),
    ("image-optics-0", lambda im: image_optics(None, fiji_bridge.default_optics(), na=0), "na"),
    ("image-optics-pixel-0", lambda im: image_optics(0.16, fiji_bridge.default_optics(), pixel_size=0.0),
     "pixel_size"),
    ("psf-fine", lambda im: zernike_psf(Optics(0.8, 0.52, 0.001)), "pixel size"),
    ("psf-huge", lambda im: zernike_psf(Optics(0.8, 0.52, 0.1), size=100001), "size"),
    ("simulate-size", lambda im: simulate_quadrants(_cfg(), 0, (16, 16)), "size"),
    ("simulate-shape", lambda im: simulate_tilted(_cfg(), 0, 64), "shape"),
    ("simulate-seed", lambda im: simulate_tilted(_cfg(), -1, (64, 64)), "seed"),
    ("simulate-photons", lambda im: simulate_quadrants(_cfg(), 0, (64, 64), photons=-5), "photons"),
    ("simulate-photons-nan", lambda im: simulate_quadrants(_cfg(), 0, (64, 64), photons=float("nan")), "photons"),
    ("config-params-text", lambda im: ModelConfig.from_dict(_cfg_dict(parameters="abc")),
     "parameters must be a list"),
    ("config-range-one", lambda im: ModelConfig.from_dict(_cfg_dict(pixel_size_range=[1])), "pixel_size_range"),
]


def _cfg() -> ModelConfig:
    return ModelConfig.load(default_model_path().with_suffix(".json"))


def _cfg_dict(**changes) -> dict:
    return {**json.loads(default_model_path().with_suffix(".json").read_text()), **changes}


@pytest.mark.parametrize("call, name", [pytest.param(c, n, id=i) for i, c, n in API_CASES])
def test_api_refuses_bad_input_naming_the_parameter(image, monkeypatch, call, name):
    def forbidden(*args, **kwargs):
        raise AssertionError("the PSF map was computed before the bad argument was refused")
    if name not in ("image",):                       # arguments are checked before any work
        monkeypatch.setattr("fiji_bridge.pipeline.estimate_psf_map", forbidden)
    with pytest.raises(ValueError, match=name) as info:
        call(image)
    assert "\n" not in str(info.value)


def test_api_model_errors(inputs):
    with pytest.raises(ValueError, match="does not belong"):
        PSFModel(inputs / "models" / "two_params.onnx")
    with pytest.raises(ValueError, match="non-finite output"):
        estimate_psf_map(specimen(), model=inputs / "models" / "nan_model.onnx")


def test_numpy_scalars_are_numbers():
    o = Optics(np.float32(0.8), np.float64(0.52), np.float32(0.1), np.int64(1))
    assert o == Optics(float(np.float32(0.8)), 0.52, float(np.float32(0.1)), 1.0) and type(o.na) is float
    assert o.to_dict() == json.loads(json.dumps(o.to_dict()))


@pytest.mark.parametrize("unit, value", [("Å", 1600.0), ("nm", 160.0), ("µm", 0.16), ("mm", 1.6e-4),
                                         ("m", 1.6e-7), ("cm", 1.6e-5)])
def test_ome_units_are_converted(tmp_path, unit, value):
    path = tmp_path / "u.ome.tif"
    tifffile.imwrite(path, np.zeros((16, 16), np.uint16), metadata={
        "axes": "YX", "PhysicalSizeX": value, "PhysicalSizeXUnit": unit, "PhysicalSizeY": value,
        "PhysicalSizeYUnit": unit})
    img = read_image(path)
    assert img.pixel_size == pytest.approx(0.16) and getattr(img, "calibration_error", None) is None
