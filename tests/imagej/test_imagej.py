"""Fiji / ImageJ bridge against the real ImageJ 1 (ij.jar) in a headless JVM started once per session."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

jpype = pytest.importorskip("jpype")
pytest.importorskip("scyjava")

from fiji_bridge import imagej as ijconv  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BATCH_MACRO = ROOT / "plugins" / "macros" / "semiblind_batch.ijm"


def _ij_available() -> bool:
    try:
        ijconv.find_ij_jar()
    except ValueError:
        return False
    return shutil.which("javac") is not None and shutil.which("java") is not None


pytestmark = pytest.mark.skipif(not _ij_available(), reason="ImageJ 1 (libij-java) or a JDK is not installed")


@pytest.fixture(scope="session")
def ij():
    """The headless JVM with ImageJ 1 and the registered command (started once per pytest session)."""
    from fiji_bridge.imagej import command as fiji_command
    ijconv.start_jvm(headless=True)
    fiji_command.install()
    return jpype.JClass("ij.IJ")


def blurred_specimen(size: int = 160, seed: int = 0, dtype=np.uint16) -> np.ndarray:
    """A mixed specimen (cells, filaments, beads) blurred by a defocused PSF of the bundled model's optics,
    with Poisson noise: structured enough everywhere for the PSF map."""
    from scipy.signal import fftconvolve

    from fiji_bridge import default_optics, zernike_psf
    from fiji_bridge.simulation.specimens import mixture
    rng = np.random.default_rng(seed)
    psf = zernike_psf(default_optics(), {4: 0.12 + 0.02 * seed}, size=41)
    clean = fftconvolve(mixture((size, size), rng), psf, mode="same") * 400 + 20
    return rng.poisson(np.clip(clean, 0, None)).astype(dtype)


def write_tiff(path: Path, data: np.ndarray, pixel_size: float | None, unit: str = "micron") -> Path:
    resolution = (1 / pixel_size, 1 / pixel_size) if pixel_size else None
    tifffile.imwrite(path, data, imagej=True, resolution=resolution, metadata={"unit": unit} if pixel_size else {})
    return path


def macro_quote(path: Path) -> str:
    return str(path).replace("\\", "/")


# ------------------------------------------------------------------------------------- conversions


@pytest.mark.parametrize("dtype, ij_type", [(np.uint8, 0), (np.uint16, 1), (np.float32, 2)])
def test_roundtrip_every_pixel_type(ij, dtype, ij_type):
    rng = np.random.default_rng(3)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    hi = info.max if info else 1e4
    a = (rng.random((37, 53)) * hi).astype(dtype)
    a[0, 0], a[-1, -1] = (info.max, 0) if info else (-5.5, 7.25)   # unsigned extremes / negative floats
    imp = ijconv.numpy_to_imageplus(a, "rt")
    assert int(imp.getType()) == ij_type
    assert (imp.getWidth(), imp.getHeight()) == (53, 37)
    # read back through ImageJ's own accessors (row y, column x), not only through our converter
    ip = imp.getProcessor()
    assert float(ip.getPixelValue(0, 0)) == pytest.approx(float(a[0, 0]))
    assert float(ip.getPixelValue(52, 36)) == pytest.approx(float(a[-1, -1]))
    assert float(ip.getPixelValue(7, 3)) == pytest.approx(float(a[3, 7]))
    back = ijconv.imageplus_to_numpy(imp)
    assert back.dtype == dtype and back.shape == a.shape
    np.testing.assert_array_equal(back, a)


def test_images_made_by_imagej_convert_unsigned(ij):
    imp8 = ij.createImage("r8", "8-bit ramp", 256, 4, 1)
    a8 = ijconv.imageplus_to_numpy(imp8)
    assert a8.dtype == np.uint8 and a8.shape == (4, 256)
    assert a8[0, 255] == int(imp8.getProcessor().get(255, 0)) > 127
    imp16 = ij.createImage("r16", "16-bit ramp", 64, 8, 1)
    a16 = ijconv.imageplus_to_numpy(imp16)
    assert a16.dtype == np.uint16 and a16[5, 63] == int(imp16.getProcessor().get(63, 5)) > 32767


def test_hyperstack_roundtrip(ij):
    rng = np.random.default_rng(4)
    a = (rng.random((2, 3, 4, 9, 11)) * 60000).astype(np.uint16)      # T, Z, C, Y, X
    imp = ijconv.numpy_to_imageplus(a, "hs", axes="TZCYX", pixel_size=0.2)
    assert (imp.getNChannels(), imp.getNSlices(), imp.getNFrames()) == (4, 3, 2)
    assert imp.isHyperStack()
    t, z, c, y, x = 1, 2, 3, 5, 7
    idx = imp.getStackIndex(c + 1, z + 1, t + 1)                   # ImageJ is 1-based, channel fastest
    assert int(imp.getStack().getProcessor(idx).get(x, y)) == a[t, z, c, y, x]
    assert ijconv.imageplus_axes(imp) == "TZCYX"
    np.testing.assert_array_equal(ijconv.imageplus_to_numpy(imp), a)
    # other axis orders are mapped onto ImageJ's C/Z/T
    b = np.moveaxis(a[0], 1, 0)                                    # (C, Z, Y, X)
    imp2 = ijconv.numpy_to_imageplus(b, "czyx", axes="CZYX")
    assert (imp2.getNChannels(), imp2.getNSlices(), imp2.getNFrames()) == (4, 3, 1)
    assert ijconv.imageplus_axes(imp2) == "ZCYX"
    np.testing.assert_array_equal(ijconv.imageplus_to_numpy(imp2), a[0])
    assert ijconv.imageplus_to_numpy(imp2, squeeze=False).shape == (1, 3, 4, 9, 11)


def test_stack_labels_and_other_dtypes(ij):
    imp = ijconv.numpy_to_imageplus(np.zeros((3, 4, 5), np.float64), "s", labels=["a", "b", "c"])
    assert int(imp.getType()) == 2 and imp.getStackSize() == 3
    assert [str(imp.getStack().getSliceLabel(i)) for i in (1, 2, 3)] == ["a", "b", "c"]
    assert int(ijconv.numpy_to_imageplus(np.ones((4, 4), bool), "b").getType()) == 0
    signed = ijconv.numpy_to_imageplus(np.array([[-3, 4]], np.int16), "i16")
    assert int(signed.getType()) == 2
    np.testing.assert_array_equal(ijconv.imageplus_to_numpy(signed), [[-3.0, 4.0]])


def test_generic_entry_points_without_gateway(ij):
    a = np.arange(12, dtype=np.uint16).reshape(3, 4)
    imp = ijconv.to_java(a, title="g", pixel_size=0.2)
    assert ijconv.is_imageplus(imp) and not ijconv.is_imageplus(a)
    np.testing.assert_array_equal(ijconv.to_numpy(imp), a)
    assert ijconv.to_numpy(a) is a and ijconv.imageplus_from(imp) is imp
    assert ijconv.pixel_size_um(imp) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="gateway"):
        ijconv.to_numpy(jpype.JClass("java.lang.StringBuilder")())
    nan_imp = ijconv.numpy_to_imageplus(np.array([[np.nan, 1.0, 3.0]]), "nan")   # NaN ("no data") is kept
    np.testing.assert_array_equal(ijconv.imageplus_to_numpy(nan_imp), [[np.nan, 1.0, 3.0]])
    assert (nan_imp.getDisplayRangeMin(), nan_imp.getDisplayRangeMax()) == (1.0, 3.0)


@pytest.mark.parametrize("bad, match", [
    (dict(array=np.zeros(5)), "at least 2"),
    (dict(array=np.zeros((2, 3, 4)), axes="YXZ"), "axes"),
    (dict(array=np.zeros((2, 3, 4)), labels=["only one"]), "labels"),
    (dict(array=np.zeros((3, 3), complex)), "dtype"),
])
def test_numpy_to_imageplus_rejects_bad_input(ij, bad, match):
    with pytest.raises(ValueError, match=match):
        ijconv.numpy_to_imageplus(bad.pop("array"), "x", **bad)


def test_rgb_is_a_clear_error(ij):
    rgb = ij.createImage("colour", "RGB white", 8, 8, 1)
    with pytest.raises(ValueError, match="RGB"):
        ijconv.imageplus_to_numpy(rgb)


@pytest.mark.parametrize("unit, width, expected", [
    ("micron", 0.1, 0.1), ("µm", 0.25, 0.25), ("um", 0.3, 0.3), ("nm", 65.0, 0.065), ("mm", 0.0002, 0.2),
    ("pixel", 1.0, None),
])
def test_calibration_units(ij, unit, width, expected):
    imp = ijconv.numpy_to_imageplus(np.zeros((4, 4), np.float32), "cal")
    cal = imp.getCalibration()
    cal.pixelWidth = cal.pixelHeight = width
    cal.setUnit(unit)
    got = ijconv.pixel_size_um(imp)
    assert got == (None if expected is None else pytest.approx(expected))


def test_calibration_errors(ij):
    imp = ijconv.numpy_to_imageplus(np.zeros((4, 4), np.float32), "cal")
    cal = imp.getCalibration()
    cal.pixelWidth, cal.pixelHeight = 0.1, 0.2
    cal.setUnit("micron")
    with pytest.raises(ValueError, match="not square"):
        ijconv.pixel_size_um(imp)
    cal.pixelHeight = 0.1
    cal.setUnit("sec")
    with pytest.raises(ValueError, match="not a length"):
        ijconv.pixel_size_um(imp)
    with pytest.raises(ValueError, match="pixel_size"):
        ijconv.set_pixel_size(imp, -1.0)


def test_calibration_survives_imagej_tiff(ij, tmp_path):
    a = np.arange(30 * 40, dtype=np.float32).reshape(30, 40)
    imp = ijconv.numpy_to_imageplus(a, "calib", pixel_size=0.0725, info={"k": 1})
    path = tmp_path / "calib.tif"
    assert ij.saveAsTiff(imp, str(path))
    back = ij.openImage(str(path))
    assert ijconv.pixel_size_um(back) == pytest.approx(0.0725)
    assert json.loads(str(back.getProperty("Info"))) == {"k": 1}
    np.testing.assert_array_equal(ijconv.imageplus_to_numpy(back), a)
    # tifffile reads the same calibration (ImageJ writes 1/µm resolution)
    with tifffile.TiffFile(path) as tif:
        num, den = tif.pages[0].tags["XResolution"].value
        assert den / num == pytest.approx(0.0725, rel=1e-4)


def test_result_title():
    assert ijconv.result_title("cells.ome.tif", "restored") == "cells_restored"
    assert ijconv.result_title("a.b.TIFF", "psfmap") == "a.b_psfmap"


# ------------------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def command_result(ij):
    from fiji_bridge.imagej import command as fiji_command
    imp = ijconv.numpy_to_imageplus(blurred_specimen(), "beads.tif", pixel_size=0.16)
    calls = []
    result = fiji_command.run_command(imp, {"iterations": "4", "tv": "0.001", "psf_montage": "true"},
                                      progress=lambda f, m: calls.append((f, m)))
    return imp, result, calls


def test_command_results(command_result):
    imp, result, calls = command_result
    restored = result.restored
    assert str(restored.getTitle()) == "beads_restored" and int(restored.getType()) == 2
    assert ijconv.pixel_size_um(restored) == pytest.approx(0.16)
    out = ijconv.imageplus_to_numpy(restored)
    np.testing.assert_allclose(out, result.deconvolution.image)
    src = ijconv.imageplus_to_numpy(imp).astype(np.float32)
    assert out.shape == src.shape and not np.allclose(out, src, rtol=0.01)
    # the bridge adds nothing to the pipeline: same result as calling it directly with the same parameters
    from fiji_bridge import deconvolve, default_optics
    direct = deconvolve(src, iterations=4, tv=0.001, optics=default_optics(0.16))
    np.testing.assert_allclose(out, direct.image, rtol=1e-5, atol=1e-4)
    assert out.sum() == pytest.approx(src.sum(), rel=0.05)           # RL keeps the flux
    info = json.loads(str(restored.getProperty("Info")))
    assert info["parameters"]["iterations"] == 4 and info["optics"]["pixel_size"] == pytest.approx(0.16)
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(calls) >= 5


def test_parameter_map_stack(command_result):
    """The map window holds the map file's slices, labels and Info keys (one format with the command line), as a
    composite with one Fire-coloured channel per quantity, each with its own display range."""
    _, result, _ = command_result
    m = result.deconvolution.maps[()]
    pmap = result.parameter_map
    stack, labels, meta = m.to_stack()
    assert (pmap.getWidth(), pmap.getHeight(), pmap.getStackSize()) == (stack.shape[2], stack.shape[1], len(stack))
    assert [str(pmap.getStack().getSliceLabel(i + 1)) for i in range(len(stack))] == labels
    assert labels[:len(m.names) + 2] == [*m.names, "confidence", "depth_um"]
    np.testing.assert_allclose(ijconv.imageplus_to_numpy(pmap), stack, rtol=1e-6)
    assert set(json.loads(str(pmap.getProperty("Info")))) == set(json.loads(json.dumps(meta)))
    cal = pmap.getCalibration()
    assert ijconv.pixel_size_um(pmap) == pytest.approx(m.spacing * 0.16) and abs(m.spacing - m.stride) <= 1
    # map pixel 0 sits on the first patch centre in image µm coordinates
    assert cal.getX(0.0) == pytest.approx(m.centres_x[0] * 0.16)
    assert cal.getY(1.0) == pytest.approx(m.centres_y[1] * 0.16)
    # each quantity is shown with its own range (a single range would make the defocus slice black)
    assert pmap.isComposite() and pmap.getNChannels() == len(stack)
    ranges = [(lut.min, lut.max) for lut in pmap.getLuts()]
    for q, (lo, hi) in enumerate(ranges):
        assert lo == pytest.approx(float(stack[q].min())) and hi >= float(stack[q].max()) - 1e-6
    fire = jpype.JClass("ij.plugin.LutLoader").getLut("fire")
    reds = jpype.JArray(jpype.JByte)(256), jpype.JArray(jpype.JByte)(256)
    pmap.getLuts()[1].getReds(reds[0])
    fire.getReds(reds[1])
    assert list(reds[0]) == list(reds[1]) and len(set(reds[0])) > 100          # Fire, not grey
    depth = result.depth_map
    np.testing.assert_allclose(ijconv.imageplus_to_numpy(depth), m.depth_um(), rtol=1e-6)
    assert str(depth.getCalibration().getValueUnit()) == "µm"
    montage = result.montage
    psfs, _, _ = m.render_psfs(None)
    gy, gx, h, w = psfs.shape
    assert (montage.getHeight(), montage.getWidth()) == (gy * h, gx * w)
    assert ijconv.imageplus_to_numpy(montage).max() == pytest.approx(1.0)


@pytest.mark.parametrize("values, match", [
    ({"iterations": "abc"}, "iterations"),
    ({"iterations": "2.5"}, "iterations"),
    ({"tv": "5"}, "tv"),
    ({"device": "tpu"}, "device"),
    ({"na": "-1"}, "na"),
    ({"model": "/nonexistent/model.onnx"}, "model"),
    ({"psf_montage": "perhaps"}, "psf_montage"),
    ({"sigma": "2"}, "sigma"),
])
def test_parameter_validation(values, match):
    from fiji_bridge.imagej.command import CommandParameters
    with pytest.raises(ValueError, match=match):
        CommandParameters.parse(values)


def test_defaults_and_macro_options(ij):
    from fiji_bridge import default_optics
    from fiji_bridge.imagej import command as fiji_command
    imp = ijconv.numpy_to_imageplus(np.zeros((8, 8), np.uint16), "d", pixel_size=0.11)
    d = fiji_command.default_parameters(imp)
    assert float(d["pixel_size"]) == pytest.approx(0.11) and float(d["na"]) == default_optics().na
    uncal = fiji_command.default_parameters(ijconv.numpy_to_imageplus(np.zeros((8, 8), np.uint16), "u"))
    assert float(uncal["pixel_size"]) == default_optics().pixel_size
    opts = fiji_command.macro_options(iterations=3, model="", psf_montage=True)
    assert opts == "iterations=3 model=[] psf_montage"
    with pytest.raises(ValueError, match="sigma"):
        fiji_command.macro_options(sigma=1)


def test_signed_16bit_values_are_restored(ij):
    from fiji_bridge.imagej.command import image_plane
    imp = ij.createImage("s16", "16-bit black", 8, 8, 1)
    imp.getProcessor().set(2, 1, 32768 - 5)
    imp.getCalibration().setSigned16BitCalibration()
    plane = image_plane(imp)
    assert plane[1, 2] == -5.0 and plane[0, 0] == -32768.0


def test_explicit_pixel_size_wins_over_calibration(ij):
    from fiji_bridge.imagej import command as fiji_command
    imp = ijconv.numpy_to_imageplus(blurred_specimen(seed=10), "px.tif", pixel_size=0.16)
    cal = imp.getCalibration()
    cal.pixelHeight = 0.2                                          # non-square: unusable calibration
    with pytest.raises(ValueError, match="not square.*give pixel_size"):
        fiji_command.run_command(imp, {"iterations": "1"}, progress=lambda f, m: None)
    result = fiji_command.run_command(imp, {"iterations": "1", "pixel_size": "0.15"}, progress=lambda f, m: None)
    assert ijconv.pixel_size_um(result.restored) == pytest.approx(0.15)
    assert json.loads(str(result.restored.getProperty("Info")))["optics"]["pixel_size"] == pytest.approx(0.15)


def test_too_small_stack_names_the_problem(ij):
    from fiji_bridge.imagej import command as fiji_command
    imp = ijconv.numpy_to_imageplus(np.zeros((3, 16, 16), np.uint16), "stack")
    with pytest.raises(ValueError, match="16x16 pixels is smaller than one"):
        fiji_command.run_command(imp, {"iterations": "1"})
    with pytest.raises(ValueError, match="3 planes"):
        fiji_command.image_plane(imp)


# ------------------------------------------------------------------------------------------ macros


def test_macro_run_command_shows_results(ij, tmp_path):
    from fiji_bridge.imagej import command as fiji_command
    src = write_tiff(tmp_path / "m1.tif", blurred_specimen(seed=1), 0.16)
    marker = tmp_path / "titles.txt"
    macro = f"""
    setBatchMode(true);
    open("{macro_quote(src)}");
    run("Semi-Blind Deconvolution", "iterations=3 tv=0.002 stride=0 device=cpu");
    titles = getList("image.titles");
    s = ""; for (i = 0; i < titles.length; i++) s = s + titles[i] + "\\n";
    File.saveString(s, "{macro_quote(marker)}");
    close("*");
    """
    ij.runMacro(macro)
    assert fiji_command.last_error() == ""
    titles = marker.read_text().split()
    assert {"m1.tif", "m1_restored", "m1_psfmap", "m1_depth"} <= set(titles)


def test_batch_macro_on_three_files(ij, tmp_path):
    from fiji_bridge import default_optics
    from fiji_bridge.imagej import command as fiji_command
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    cases = {"a.tif": (0.16, "micron", 0.16), "b.tif": (130.0, "nm", 0.13), "c.tif": (None, None, None)}
    inputs = {}
    for i, (name, (size, unit, _)) in enumerate(cases.items()):
        inputs[name] = blurred_specimen(seed=i + 2, dtype=np.uint16 if i != 1 else np.float32)
        write_tiff(src / name, inputs[name], size, unit or "micron")
    (src / "notes.txt").write_text("not an image")
    arg = f"input=[{macro_quote(src)}] output=[{macro_quote(out)}] options=[iterations=3 tv=0.002]"
    ij.runMacroFile(str(BATCH_MACRO), arg)
    assert fiji_command.last_error() == ""
    default_px = default_optics().pixel_size
    for name, (_, _, px_um) in cases.items():
        stem = name[:-4]
        restored = ij.openImage(str(out / f"{stem}_restored.tif"))
        assert restored is not None, f"{stem}_restored.tif missing"
        data = ijconv.imageplus_to_numpy(restored)
        assert data.shape == (160, 160) and data.dtype == np.float32
        assert not np.allclose(data, inputs[name].astype(np.float32), rtol=0.01)
        # calibration survives (ImageJ's TIFF writer stores the resolution as a rational: ~1e-5 rounding)
        source_px = ijconv.pixel_size_um(ij.openImage(str(src / name)))
        assert ijconv.pixel_size_um(restored) == pytest.approx(source_px or default_px, rel=1e-4)
        assert ijconv.pixel_size_um(restored) == pytest.approx(px_um or default_px, rel=1e-4)
        if px_um is not None:       # the input's own unit is kept
            assert str(restored.getCalibration().getUnit()) in (("nm",) if name == "b.tif" else ("micron", "µm"))
        pmap = ij.openImage(str(out / f"{stem}_psfmap.tif"))
        map_info = json.loads(str(pmap.getProperty("Info")))
        assert "defocus" in map_info["parameters"] and pmap.getStackSize() == len(map_info["units"])
        labels = [str(pmap.getStack().getSliceLabel(k + 1)) for k in range(pmap.getStackSize())]
        assert labels[:len(map_info["parameters"]) + 2] == [*map_info["parameters"], "confidence", "depth_um"]
        from fiji_bridge.io.map_file import load_psf_map
        saved = load_psf_map(out / f"{stem}_psfmap.tif")                          # the map file, reusable
        assert saved.stride == map_info["stride_px"]
        # a map pixel is the distance between patch centres (the stride, unrounded)
        assert ijconv.pixel_size_um(pmap) == pytest.approx(saved.spacing * (source_px or default_px), rel=1e-4)
        depth = ij.openImage(str(out / f"{stem}_depth.tif"))
        assert depth.getWidth() == pmap.getWidth() and np.all(ijconv.imageplus_to_numpy(depth) >= 0)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{s}_{k}.tif" for s in "abc" for k in ("restored", "psfmap", "depth"))


def test_batch_macro_skips_bad_files_and_counts_failed_saves(ij, tmp_path, capfd):
    """Issue 13 item 5: one bad file does not stop the batch, a failed save is a failure, the summary is true."""
    from fiji_bridge.imagej import command as fiji_command
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i, name in enumerate(("a", "c", "e", "g")):
        write_tiff(src / f"{name}.tif", blurred_specimen(seed=20 + i), 0.16)
    (src / "b.tif").write_bytes(b"II*\x00 not an image")                      # ImageJ cannot open it
    (src / "d.tif").write_bytes(b"")                                           # zero bytes
    tifffile.imwrite(src / "f.tif", np.zeros((64, 64, 3), np.uint8), photometric="rgb")   # RGB: refused
    (out / "e_restored.tif").mkdir(parents=True)                               # e's result cannot be saved
    capfd.readouterr()
    ij.runMacroFile(str(BATCH_MACRO), f"input=[{macro_quote(src)}] output=[{macro_quote(out)}] "
                                      "options=[iterations=2 tv=0.002]")
    log = capfd.readouterr().out
    summary = [line for line in log.splitlines() if line.startswith("semiblind_batch: ") and " done, " in line]
    assert summary and summary[-1].startswith("semiblind_batch: 3 done, 2 failed, 2 skipped of 7 TIFF file(s)"), log
    assert "semiblind_batch: b.tif skipped" in log and "semiblind_batch: d.tif skipped" in log
    assert "semiblind_batch: f.tif failed" in log and "semiblind_batch: e.tif failed: cannot save" in log
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted([f"{s}_{k}.tif" for s in "acg" for k in ("restored", "psfmap", "depth")]
                             + ["e_restored.tif"]), written               # no temporary file left behind
    for stem in "acg":
        assert ij.openImage(str(out / f"{stem}_restored.tif")).getWidth() == 160
    assert fiji_command.last_error() == ""                                     # the last file (g) succeeded


def test_gpu_without_gpu_is_one_line_without_traceback(ij, tmp_path, capfd):
    from fiji_bridge.imagej import command as fiji_command
    from fiji_bridge.restoration.backend import cupy_module
    if cupy_module() is not None:
        pytest.skip("this machine has a usable GPU")
    src = write_tiff(tmp_path / "g.tif", blurred_specimen(seed=11), 0.16)
    capfd.readouterr()
    ij.runMacro(f'setBatchMode(true); open("{macro_quote(src)}"); run("Semi-Blind Deconvolution", "device=gpu");')
    log = capfd.readouterr().out
    assert fiji_command.last_error().startswith("device: 'gpu' needs") and "Traceback" not in log, log
    with pytest.raises(ValueError, match="device"):
        fiji_command.run_command(ijconv.numpy_to_imageplus(blurred_specimen(seed=11), "g"), {"device": "gpu"})


@pytest.mark.parametrize("values", [{"pixel_size": "0.065"}, {"na": "1.2"}])
def test_bad_optics_name_the_dialog_fields(ij, values):
    from fiji_bridge.imagej import command as fiji_command
    imp = ijconv.numpy_to_imageplus(blurred_specimen(seed=12), "o.tif", pixel_size=0.16)
    with pytest.raises(ValueError, match="check the pixel_size, na, wavelength and n fields") as info:
        fiji_command.run_command(imp, {"iterations": "1", **values}, progress=lambda f, m: None)
    assert "--" not in str(info.value)


def test_command_error_aborts_macro_and_jvm_stays_usable(ij, tmp_path, capfd):
    from fiji_bridge.imagej import command as fiji_command
    src = write_tiff(tmp_path / "e.tif", blurred_specimen(seed=5), 0.16)
    after = tmp_path / "after.txt"
    macro = f"""
    open("{macro_quote(src)}");
    run("Semi-Blind Deconvolution", "iterations=3 tv=5");
    File.saveString("ran on", "{macro_quote(after)}");
    """
    ij.runMacro(macro)
    assert not after.exists(), "the macro went on after the command failed"
    assert fiji_command.last_error() == "tv must be in [0, 0.2], got 5"
    assert "Semi-Blind Deconvolution error: tv must be in [0, 0.2], got 5" in capfd.readouterr().out
    # a Python exception of another kind is one line too, and the next run works
    ij.runMacro(f'open("{macro_quote(src)}"); run("Semi-Blind Deconvolution", "model=[{macro_quote(src)}]");'
                f'File.saveString("x", "{macro_quote(after)}");')
    assert not after.exists() and "\n" not in fiji_command.last_error() and fiji_command.last_error()
    ij.runMacro(f'setBatchMode(true); open("{macro_quote(src)}");'
                'run("Semi-Blind Deconvolution", "iterations=2");'
                f'File.saveString(getTitle(), "{macro_quote(after)}"); close("*");')
    assert fiji_command.last_error() == ""
    assert after.read_text() == "e_restored"
    # a misspelt macro key is named, not silently replaced by its default
    after.unlink()
    ij.runMacro(f'open("{macro_quote(src)}"); run("Semi-Blind Deconvolution", "iteration=2");'
                f'File.saveString("x", "{macro_quote(after)}");')
    assert not after.exists() and fiji_command.last_error().startswith("unknown parameter 'iteration'")


def test_call_fallback_and_no_image(ij, tmp_path):
    from fiji_bridge.imagej import command as fiji_command
    src = write_tiff(tmp_path / "f.tif", blurred_specimen(seed=6), 0.16)
    out = tmp_path / "ret.txt"
    ij.runMacro(f'setBatchMode(true); open("{macro_quote(src)}");'
                'r = call("semiblind.SemiBlindBridge.run", "iterations=2");'
                f'File.saveString("[" + r + "]" + getTitle(), "{macro_quote(out)}"); close("*");')
    assert out.read_text() == "[]f_restored"
    results = jpype.JClass("semiblind.SemiBlindBridge").lastResults()
    assert [str(r.getTitle()) for r in results] == ["f_restored", "f_psfmap", "f_depth"]
    ij.runMacro('close("*"); run("Semi-Blind Deconvolution", "iterations=2");')
    assert "no image" in fiji_command.last_error()


def test_fiji_script_body_runs_with_injected_parameters(ij):
    """Run the Fiji script command as SciJava would in Python mode: #@ parameters injected as globals."""
    import runpy
    imp = ijconv.numpy_to_imageplus(blurred_specimen(seed=8), "script.tif", pixel_size=0.16)
    inputs = dict(imp=imp, iterations=2, tv=0.002, stride=0, model=None, device="cpu", na=0.0, wavelength="0",
                  pixel_size=0.0, n=0.0, objective="none/custom", channels="best", frames="smooth", psf_map=None,
                  psf_montage=True)
    scripts = ROOT / "plugins" / "scripts" / "Plugins" / "Deconvolution"
    out = runpy.run_path(str(scripts / "Semi-Blind_Deconvolution.py"), init_globals=inputs)
    assert str(out["restored"].getTitle()) == "script_restored"
    assert ijconv.pixel_size_um(out["restored"]) == pytest.approx(0.16)
    assert out["parameter_map"].getStackSize() >= 5 and out["depth_map"].getStackSize() == 1
    assert out["psf_grid"] is not None
    map_inputs = {k: v for k, v in inputs.items() if k not in ("iterations", "tv", "psf_map", "psf_montage")}
    out = runpy.run_path(str(scripts / "Estimate_PSF_Map.py"), init_globals={**map_inputs, "objective": "20x/0.75-air"})
    assert str(out["psf_map"].getTitle()) == "script_psfmap"
    assert json.loads(str(out["psf_map"].getProperty("Info")))["optics"]["na"] == 0.75


# ------------------------------------------------------------------------------------ shim & example


def test_shim_jar_is_built_from_source():
    import zipfile
    jar = ijconv.build_shim()
    names = zipfile.ZipFile(jar).namelist()
    assert {"semiblind/CommandHandler.class", "semiblind/SemiBlindBridge.class",
            "semiblind/Semi_Blind_Deconvolution.class"} <= set(names)
    newest_source = max(p.stat().st_mtime for p in (ROOT / "plugins/java/src").rglob("*.java"))
    assert jar.stat().st_mtime >= newest_source


def test_headless_example_runs(tmp_path):
    src = write_tiff(tmp_path / "ex.tif", blurred_specimen(seed=7), 0.16)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "headless_imagej.py"), str(src),
                           "-o", str(tmp_path / "out"), "--iterations", "3"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["restored"]["shape"] == [160, 160]
    assert summary["restored"]["pixel_size_um"] == pytest.approx(0.16)
    for key in ("restored", "psfmap", "depth"):
        assert Path(summary[key]["path"]).is_file()
