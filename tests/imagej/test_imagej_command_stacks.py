"""The ImageJ command on real ImageJ 1 (issue 14): hyperstacks in and out, objective presets, the PSF map as a
file users keep (ImageJ's map window saved by ImageJ loads with `load_psf_map`), the "Estimate PSF Map"
command, Esc, selections, unique titles and errors that name the dialog fields."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

jpype = pytest.importorskip("jpype")
pytest.importorskip("scyjava")

from fiji_bridge import imagej as ijconv  # noqa: E402
from tests.imagej.test_imagej import BATCH_MACRO, _ij_available, blurred_specimen, macro_quote, write_tiff  # noqa: E402

pytestmark = pytest.mark.skipif(not _ij_available(), reason="ImageJ 1 (libij-java) or a JDK is not installed")

QUIET = {"progress": lambda f, m: None}


@pytest.fixture(scope="module")
def ij():
    from fiji_bridge.imagej import command as fiji_command
    ijconv.start_jvm(headless=True)
    fiji_command.install()
    return jpype.JClass("ij.IJ")


def composite_hyperstack(ij, size: int = 128):
    """A 2-channel (DAPI, GFP), 2-slice, 2-frame 16-bit composite made with ImageJ's own calls: µm pixels,
    a z step, a frame interval and coloured channels."""
    imp = ij.createHyperStack("cells.tif", size, size, 2, 2, 2, 16)
    stack = imp.getStack()
    for c in range(2):
        for z in range(2):
            for t in range(2):
                index = imp.getStackIndex(c + 1, z + 1, t + 1)
                plane = blurred_specimen(size, seed=c + 2 * z + 4 * t).astype(np.int16)
                stack.setPixels(jpype.JArray(jpype.JShort)(plane.ravel().tolist()), index)
                stack.setSliceLabel(["DAPI", "GFP"][c], index)
    cal = imp.getCalibration()
    cal.pixelWidth = cal.pixelHeight = 0.16
    cal.pixelDepth, cal.frameInterval = 0.4, 30.0
    cal.setUnit("micron")
    comp = jpype.JClass("ij.CompositeImage")(imp, jpype.JClass("ij.CompositeImage").COMPOSITE)
    LUT = jpype.JClass("ij.process.LUT")
    Color = jpype.JClass("java.awt.Color")
    comp.setChannelLut(LUT.createLutFromColor(Color.blue), 1)
    comp.setChannelLut(LUT.createLutFromColor(Color.green), 2)
    return comp


# --------------------------------------------------------------------------------------- hyperstacks


def test_hyperstack_in_hyperstack_out(ij):
    from fiji_bridge.imagej import command as fiji_command
    imp = composite_hyperstack(ij)
    result = fiji_command.run_command(imp, {"iterations": "3", "tv": "0.001", "wavelength": "0.46,0.52"}, **QUIET)
    out = result.restored
    assert str(out.getTitle()) == "cells_restored" and out.getBitDepth() == 32
    assert (out.getNChannels(), out.getNSlices(), out.getNFrames()) == (2, 2, 2) and out.isHyperStack()
    assert out.isComposite() and int(out.getMode()) == int(imp.getMode())
    assert [int(lut.getRGB(jpype.JInt(255))) & 0xFFFFFF for lut in out.getLuts()] == [0x0000FF, 0x00FF00]
    c = out.getCalibration()
    assert (c.pixelWidth, c.pixelHeight, c.pixelDepth, c.frameInterval) == pytest.approx((0.16, 0.16, 0.4, 30.0))
    assert str(c.getUnit()) == "micron"
    labels = [str(out.getStack().getSliceLabel(k + 1)) for k in range(8)]
    assert labels == [str(imp.getStack().getSliceLabel(k + 1)) for k in range(8)]
    # every plane sits at the same (c, z, t) as in the input, and is the stack API's restoration of it
    restored = result.deconvolution.image                       # (T, Z, C, Y, X)
    assert result.deconvolution.axes == "TZCYX" and restored.shape == (2, 2, 2, 128, 128)
    ip = out.getStack().getProcessor(out.getStackIndex(2, 1, 2))    # c2 z1 t2
    assert float(ip.getPixelValue(40, 30)) == pytest.approx(float(restored[1, 0, 1, 30, 40]))
    source = ijconv.imageplus_to_numpy(imp).astype(np.float32)
    assert not np.allclose(restored, source, rtol=0.01)
    info = json.loads(str(out.getProperty("Info")))
    assert info["wavelengths"] == [0.46, 0.52] and info["channel_names"] == ["DAPI", "GFP"]
    assert info["axes"] == "TZCYX" and info["maps"]["channels"] == "best" and info["maps"]["frames"] == "smooth"
    # channels best: one physical map rendered at each channel's wavelength (defocus in waves ∝ 1/λ)
    maps = result.deconvolution.maps
    ratio = maps[(0, 0, 1)].parameters[0] / maps[(0, 0, 0)].parameters[0]
    np.testing.assert_allclose(ratio[np.abs(maps[(0, 0, 0)].parameters[0]) > 1e-3], 0.46 / 0.52, rtol=1e-4)
    # the map window holds the maps of all 8 planes; the depth map has the input's axes
    pmap, depth = result.parameter_map, result.depth_map
    n_quantities = len(maps[(0, 0, 0)].to_stack()[1])
    assert (pmap.getNChannels(), pmap.getNSlices()) == (n_quantities, 8)
    assert str(pmap.getStack().getSliceLabel(n_quantities + 1)) == "t1 z1 c2 defocus"
    assert (depth.getNChannels(), depth.getNSlices(), depth.getNFrames()) == (2, 2, 2)


def test_channel_and_frame_modes_are_fields(ij):
    from fiji_bridge.imagej import command as fiji_command
    a = np.stack([blurred_specimen(128, seed=s) for s in range(3)])
    imp = ijconv.numpy_to_imageplus(a, "tl.tif", axes="TYX", pixel_size=0.16)
    single = fiji_command.run_command(imp, {"iterations": "2", "frames": "single"}, **QUIET).deconvolution
    assert single.settings["frames"] == "single" and single.settings["flicker_waves"]["used"] < 1e-6
    independent = fiji_command.run_command(imp, {"iterations": "2", "frames": "independent"}, **QUIET).deconvolution
    assert independent.settings["flicker_waves"]["used"] > 1e-4
    defaults = fiji_command.default_parameters(imp)
    assert (defaults["channels"], defaults["frames"], defaults["objective"]) == ("best", "smooth", "none/custom")
    with pytest.raises(ValueError, match="^frames must be one of smooth, single, independent"):
        fiji_command.run_command(imp, {"frames": "average"}, **QUIET)
    with pytest.raises(ValueError, match="^wavelength: 2 wavelengths given for 1 channels"):
        fiji_command.run_command(imp, {"iterations": "2", "wavelength": "0.46,0.52"}, **QUIET)


def test_batch_macro_on_a_hyperstack_file(ij, tmp_path):
    from fiji_bridge.io.map_file import load_psf_map
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    ij.saveAsTiff(composite_hyperstack(ij, 96), str(src / "hs.tif"))
    ij.runMacroFile(str(BATCH_MACRO), f"input=[{macro_quote(src)}] output=[{macro_quote(out)}] "
                                      "options=[iterations=2 wavelength=0.46,0.52 channels=joint]")
    restored = ij.openImage(str(out / "hs_restored.tif"))
    assert (restored.getNChannels(), restored.getNSlices(), restored.getNFrames()) == (2, 2, 2)
    assert restored.getCalibration().frameInterval == pytest.approx(30.0)
    assert json.loads(str(restored.getProperty("Info")))["maps"]["channels"] == "joint"
    assert load_psf_map(out / "hs_psfmap.tif", plane=7).optics.wavelength == pytest.approx(0.52)


# ------------------------------------------------------------------------------- presets and map reuse


def test_objective_preset_sets_na_and_n(ij):
    from fiji_bridge.imagej import command as fiji_command
    imp = ijconv.numpy_to_imageplus(blurred_specimen(seed=3), "oil.tif", pixel_size=0.065)
    pmap = fiji_command.estimate_map(imp, {"objective": "60x/1.4-oil", "wavelength": "0.52"}, **QUIET)
    optics = json.loads(str(pmap.getProperty("Info")))["optics"]
    assert (optics["na"], optics["n"], optics["pixel_size"]) == pytest.approx((1.4, 1.518, 0.065))
    # a typed field wins over the preset; no preset leaves the model's air optics, which an NA 1.4 cannot use
    pmap = fiji_command.estimate_map(imp, {"objective": "60x/1.4-oil", "na": "1.3", "wavelength": "0.52"}, **QUIET)
    assert json.loads(str(pmap.getProperty("Info")))["optics"]["na"] == pytest.approx(1.3)
    with pytest.raises(ValueError, match="na \\(1.4\\) must be smaller than the refractive index n") as info:
        fiji_command.estimate_map(imp, {"objective": "none/custom", "na": "1.4"}, **QUIET)
    assert "--" not in str(info.value) and "na, wavelength and n fields" in str(info.value)
    with pytest.raises(ValueError, match="^objective: unknown preset '60x/9-oil'"):
        fiji_command.estimate_map(imp, {"objective": "60x/9-oil"}, **QUIET)
    assert fiji_command.dialog_choices()["objective"][:2] == ["none/custom", "10x/0.3-air"]


def test_map_saved_by_imagej_loads_and_restores_the_same(ij, tmp_path):
    """Estimate PSF Map -> File > Save As Tiff (IJ.saveAsTiff) -> load_psf_map: the same map; deconvolving with
    it through the psf_map field gives the restoration of a run that estimates the map itself (to 1e-5)."""
    from fiji_bridge.imagej import command as fiji_command
    from fiji_bridge.io.map_file import load_psf_map
    imp = ijconv.numpy_to_imageplus(blurred_specimen(seed=4), "rt.tif", pixel_size=0.16)
    ij.runMacro("setBatchMode(true);")
    pmap = fiji_command.estimate_map(imp, {}, **QUIET)
    path = tmp_path / "rt_psfmap.tif"
    assert ij.saveAsTiff(pmap, str(path))
    loaded = load_psf_map(path)
    direct = fiji_command.run_command(imp, {"iterations": "5", "tv": "0.002"}, **QUIET)
    estimated = direct.deconvolution.maps[()]
    np.testing.assert_allclose(loaded.parameters, estimated.parameters, rtol=1e-6, atol=1e-7)
    assert (loaded.stride, loaded.psf_size, loaded.image_shape) == (estimated.stride, estimated.psf_size,
                                                                     estimated.image_shape)
    reused = fiji_command.run_command(imp, {"iterations": "5", "tv": "0.002", "psf_map": str(path)}, **QUIET)
    np.testing.assert_allclose(ijconv.imageplus_to_numpy(reused.restored),
                               ijconv.imageplus_to_numpy(direct.restored), rtol=1e-5, atol=1e-5)
    assert json.loads(str(reused.restored.getProperty("Info")))["parameters"]["psf_map"] == str(path)
    # the map of another image size is refused naming the field
    small = ijconv.numpy_to_imageplus(blurred_specimen(128, seed=4), "small.tif", pixel_size=0.16)
    with pytest.raises(ValueError, match="^psf_map: the map was estimated on 160x160"):
        fiji_command.run_command(small, {"psf_map": str(path)}, **QUIET)
    with pytest.raises(ValueError, match="^psf_map: file not found"):
        fiji_command.run_command(small, {"psf_map": str(tmp_path / "none.tif")}, **QUIET)


def test_a_saved_map_keeps_its_optics_over_the_prefilled_fields(ij, tmp_path):
    """The dialog prefills NA/wavelength/n from the model; OK-ing it with a saved oil-objective map must render
    the map at the map's optics (what the map was estimated with), while a field the user changed wins."""
    from fiji_bridge.imagej import command as fiji_command
    imp = ijconv.numpy_to_imageplus(blurred_specimen(seed=7), "oil.tif", pixel_size=0.065)
    ij.runMacro("setBatchMode(true);")
    oil = {"na": "1.4", "n": "1.518", "wavelength": "0.52"}
    path = tmp_path / "oil_psfmap.tif"
    assert ij.saveAsTiff(fiji_command.estimate_map(imp, oil, **QUIET), str(path))
    dialog = {**fiji_command.default_parameters(imp), "iterations": "3", "tv": "0.002", "psf_map": str(path)}
    assert dialog["na"] != "1.4"                                   # the model's NA, as the dialog shows it
    values = fiji_command.map_over_prefilled_optics(imp, dialog)
    used = fiji_command.run_command(imp, values, **QUIET).deconvolution.maps[()].optics
    assert (used.na, used.n, used.wavelength) == (1.4, 1.518, 0.52)
    changed = fiji_command.map_over_prefilled_optics(imp, {**dialog, "na": "1.3"})
    assert fiji_command.run_command(imp, changed, **QUIET).deconvolution.maps[()].optics.na == 1.3
    # without a map nothing is blanked: the prefilled optics are the run's
    assert fiji_command.map_over_prefilled_optics(imp, {**dialog, "psf_map": ""})["na"] == dialog["na"]


def test_estimate_psf_map_is_a_registered_command(ij, tmp_path):
    from fiji_bridge.imagej import command as fiji_command
    from fiji_bridge.io.map_file import load_psf_map
    src = write_tiff(tmp_path / "em.tif", blurred_specimen(seed=5), 0.16)
    saved = tmp_path / "em_map.tif"
    ij.runMacro(f'setBatchMode(true); open("{macro_quote(src)}"); run("Estimate PSF Map", "stride=24");'
                f'saveAs("Tiff", "{macro_quote(saved)}"); close("*");')
    assert fiji_command.last_error() == ""
    # the step is in the model's pixels: the default model reads at pixel·NA/λ 0.25, this image samples at 0.226
    from fiji_bridge.estimation.model import PSFModel
    assert load_psf_map(saved).stride == round(24 * PSFModel().config.sampling / (0.16 * 0.75 / 0.53))
    ij.runMacro(f'setBatchMode(true); open("{macro_quote(src)}"); run("Estimate PSF Map", "iterations=3");')
    assert fiji_command.last_error().startswith("unknown parameter 'iterations'")


# ------------------------------------------------------------------------------------------ Esc


def _press_escape_later(ij, delay: float, pressed: list) -> threading.Thread:
    def press():
        time.sleep(delay)
        pressed.append(time.monotonic())
        ij.setKeyDown(jpype.JClass("java.awt.event.KeyEvent").VK_ESCAPE)
    thread = threading.Thread(target=press, daemon=True)
    thread.start()
    return thread


def test_escape_cancels_between_iterations(ij, capfd):
    """Esc (``IJ.setKeyDown(VK_ESCAPE)`` from another thread, what ImageJ's key handler does) stops a
    5000-iteration run within a few iterations: "cancelled", no result image, and the next run works."""
    from fiji_bridge.imagej import command as fiji_command
    bridge = jpype.JClass("semiblind.SemiBlindBridge")
    wm = jpype.JClass("ij.WindowManager")
    imp = ijconv.numpy_to_imageplus(blurred_specimen(256, seed=6), "long.tif", pixel_size=0.16)
    wm.setTempCurrentImage(imp)
    pressed: list = []
    thread = _press_escape_later(ij, 2.0, pressed)
    start = time.monotonic()
    error = str(bridge.run("iterations=5000 tv=0"))            # the macro call(...) entry: runs the command
    end = time.monotonic()
    thread.join()
    assert error == "cancelled" == fiji_command.last_error()
    latency = end - pressed[0]
    assert latency < 1.5, f"returned {latency:.2f} s after Esc"            # 5000 iterations take minutes
    assert len(bridge.lastResults()) == 0 and not ij.escapePressed()
    assert "Semi-Blind Deconvolution: cancelled" in capfd.readouterr().out
    assert not any("long_" in str(t) for t in wm.getImageTitles())
    print(f"Esc: run returned {latency * 1000:.0f} ms after the key, {end - start:.2f} s after its start")
    # the JVM stays usable: the next run is not cancelled
    wm.setTempCurrentImage(imp)
    assert str(bridge.run("iterations=2")) == ""
    assert [str(r.getTitle()) for r in bridge.lastResults()][:1] == ["long_restored"]


def test_escape_stops_the_batch_macro_and_leaves_no_result(ij, tmp_path, capfd):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in ("a", "b"):
        write_tiff(src / f"{name}.tif", blurred_specimen(256, seed=7), 0.16)
    pressed: list = []
    thread = _press_escape_later(ij, 2.0, pressed)
    capfd.readouterr()
    ij.runMacroFile(str(BATCH_MACRO), f"input=[{macro_quote(src)}] output=[{macro_quote(out)}] "
                                      "options=[iterations=5000 tv=0]")
    thread.join()
    log = capfd.readouterr().out
    assert "semiblind_batch: cancelled at a.tif after 0 done" in log, log
    assert list(out.iterdir()) == []                                      # nothing half-made
    assert not ij.escapePressed()


# ------------------------------------------------------------------------------ selection and titles


def test_rectangle_selection_restricts_the_run(ij):
    from fiji_bridge.imagej import command as fiji_command
    imp = ijconv.numpy_to_imageplus(blurred_specimen(200, seed=8), "roi.tif", pixel_size=0.16)
    imp.setRoi(jpype.JClass("ij.gui.Roi")(30, 20, 128, 100))
    result = fiji_command.run_command(imp, {"iterations": "2"}, **QUIET)
    out = result.restored
    assert (out.getWidth(), out.getHeight()) == (128, 100)
    # µm coordinates of the result are the input's: the result's pixel 0 is the input's pixel 30
    assert out.getCalibration().getX(0.0) == pytest.approx(imp.getCalibration().getX(30.0))
    assert out.getCalibration().getY(5.0) == pytest.approx(imp.getCalibration().getY(25.0))
    m = result.deconvolution.maps[()]
    assert m.image_shape == (100, 128)
    assert result.parameter_map.getCalibration().getX(0.0) == pytest.approx((30 + m.centres_x[0]) * 0.16)
    info = json.loads(str(out.getProperty("Info")))
    assert info["selection"] == {"x": 30, "y": 20, "width": 128, "height": 100}
    expected = fiji_command.run_command(
        ijconv.numpy_to_imageplus(blurred_specimen(200, seed=8)[20:120, 30:158], "crop.tif", pixel_size=0.16),
        {"iterations": "2"}, **QUIET)
    np.testing.assert_allclose(ijconv.imageplus_to_numpy(out), ijconv.imageplus_to_numpy(expected.restored),
                               rtol=1e-5, atol=1e-4)


def test_other_selections_use_their_bounding_box_with_a_log_line(ij, capfd):
    from fiji_bridge.imagej import command as fiji_command
    imp = ijconv.numpy_to_imageplus(blurred_specimen(160, seed=9), "oval.tif", pixel_size=0.16)
    imp.setRoi(jpype.JClass("ij.gui.OvalRoi")(10, 12, 100, 90))
    capfd.readouterr()
    out = fiji_command.run_command(imp, {"iterations": "1"}, **QUIET).restored
    assert (out.getWidth(), out.getHeight()) == (100, 90)
    assert "oval selection is not a rectangle: its bounding box 100x90 at (10, 12)" in capfd.readouterr().out
    imp.setRoi(jpype.JClass("ij.gui.Line")(5, 5, 80, 90))
    out = fiji_command.run_command(imp, {"iterations": "1"}, **QUIET).restored
    assert (out.getWidth(), out.getHeight()) == (160, 160)
    assert "selection encloses no area: the whole image is deconvolved" in capfd.readouterr().out


def test_two_runs_give_unique_titles(ij, tmp_path):
    src = write_tiff(tmp_path / "twice.tif", blurred_specimen(seed=10), 0.16)
    marker = tmp_path / "titles.txt"
    ij.runMacro(f"""
    setBatchMode(true);
    open("{macro_quote(src)}");
    run("Semi-Blind Deconvolution", "iterations=1");
    selectImage("twice.tif");
    run("Semi-Blind Deconvolution", "iterations=1");
    titles = getList("image.titles");
    s = ""; for (i = 0; i < titles.length; i++) s = s + titles[i] + "\\n";
    File.saveString(s, "{macro_quote(marker)}");
    close("*");
    """)
    titles = marker.read_text().split()
    assert len(titles) == len(set(titles)) == 7
    assert {"twice_restored", "twice_psfmap", "twice_depth", "twice_restored-1", "twice_psfmap-1",
            "twice_depth-1"} <= set(titles)


# ------------------------------------------------------------------------------------------ wording


@pytest.mark.parametrize("text, expected", [
    ("optics: the image samples the PSF at 0.41x the model's pixel size (pixel·NA/λ); this model accepts "
     "0.6–1.6x. Check --pixel-size/--na/--wavelength", "check the pixel_size, na, wavelength and n fields"),
    ("image: unusable calibration; give --pixel-size explicitly", "give the pixel_size field explicitly"),
])
def test_errors_name_the_dialog_fields(text, expected):
    from fiji_bridge.imagej.command import field_wording
    worded = field_wording(text)
    assert expected in worded and "--" not in worded


def test_bad_dialog_values_are_one_line_naming_the_field():
    from fiji_bridge.imagej.command import MAP_KEYS, CommandParameters
    for values, field in (({"channels": "all"}, "channels"), ({"wavelength": "0.46,x"}, "wavelength"),
                          ({"psf_map": "/nonexistent/map.tif"}, "psf_map"), ({"objective": "x"}, "objective")):
        with pytest.raises(ValueError, match=f"^{field}") as info:
            CommandParameters.parse(values)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="unknown parameter 'psf_map'"):
        CommandParameters.parse({"psf_map": ""}, MAP_KEYS)
