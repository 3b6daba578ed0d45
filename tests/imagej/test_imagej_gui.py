"""The ImageJ window launched from Python (``semiblind imagej``) on Xvfb: menu entry, dialog, result windows.

A JVM can start only once per process and the other ImageJ tests use a headless one, so the GUI session runs
in a subprocess: this file run as a script (``python tests/test_imagej_gui.py --session IMAGE OUT``) opens
ImageJ on the given display, clicks Plugins > Deconvolution > Semi-Blind Deconvolution (the menu item's
ActionEvent, as AWT delivers it), sets the dialog and presses OK, waits for the result windows, takes
screenshots with ImageMagick's ``import -window root`` and prints a JSON report on its last line.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMAND = "Semi-Blind Deconvolution"
MAP_COMMAND = "Estimate PSF Map"


# ------------------------------------------------------------------------------ the GUI session


def _wait(predicate, timeout: float, what: str, poll: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"timed out waiting for {what}")


def _screenshot(path: Path) -> None:
    """Screenshot of the whole display with ImageMagick's ``import`` (skipped when it is not installed)."""
    if shutil.which("import"):
        subprocess.run(["import", "-window", "root", str(path)], check=True, timeout=30)


def gui_session(image: Path, out: Path) -> dict:
    """Drive ImageJ's window like a user; returns what was seen."""
    from fiji_bridge.cli import imagej as imagej_cli
    from fiji_bridge.imagej import command as fiji_command
    from fiji_bridge import imagej as ijconv

    ij = imagej_cli.launch_imagej([str(image)])
    J = ijconv.jclass
    bridge, wm = J("semiblind.SemiBlindBridge"), J("ij.WindowManager")
    ActionEvent, Window = J("java.awt.event.ActionEvent"), J("java.awt.Window")
    GenericDialog = J("ij.gui.GenericDialog")
    report: dict = {"menu": str(bridge.pluginsMenuPaths()).splitlines()}
    _wait(lambda: wm.getCurrentImage() is not None, 20, "the input image window")
    _screenshot(out / "imagej_window.png")

    Recorder = J("ij.plugin.frame.Recorder")
    Recorder()                                           # Plugins > Macros > Record...
    item = bridge.findMenuItem(COMMAND)
    report["menu_item"] = None if item is None else str(item.getLabel())
    for listener in item.getActionListeners():        # what a click on the menu item delivers
        listener.actionPerformed(ActionEvent(item, ActionEvent.ACTION_PERFORMED, item.getActionCommand()))

    def dialog():
        for w in Window.getWindows():
            if isinstance(w, GenericDialog) and w.isShowing() and str(w.getTitle()) == COMMAND:
                return w
        return None

    gd = _wait(dialog, 30, "the command's dialog")
    fields = gd.getNumericFields()
    report["dialog_defaults"] = [str(fields.get(i).getText()) for i in range(fields.size())]
    fields.get(0).setText("400")     # iterations: long enough (~0.5 s) to watch the status line
    time.sleep(0.7)                                      # let AWT paint the dialog for the screenshot
    _screenshot(out / "dialog.png")
    ok = gd.getButtons()[0]
    gd.actionPerformed(ActionEvent(ok, ActionEvent.ACTION_PERFORMED, "OK"))

    stem = image.stem
    wanted = {f"{stem}_restored", f"{stem}_psfmap", f"{stem}_depth"}
    statuses: list[str] = []

    def results_shown():
        statuses.append(str(J("ij.ImageJ").getStatusBarText()))     # ImageJ's status line while it runs
        titles = {str(s) for s in wm.getImageTitles()}
        return titles if wanted <= titles else None

    titles = _wait(results_shown, 90, "the result windows", poll=0.005)
    statuses.append(str(J("ij.ImageJ").getStatusBarText()))
    report["status_lines"] = sorted(set(statuses))
    restored = wm.getImage(f"{stem}_restored")
    report.update(titles=sorted(titles), restored_window=bool(restored.getWindow() is not None
                                                              and restored.getWindow().isShowing()),
                  restored_size=[int(restored.getWidth()), int(restored.getHeight())],
                  restored_pixel_size=ijconv.pixel_size_um(restored), last_error=fiji_command.last_error())

    def recorded_lines():      # the Executer records the command after it returns, just after the windows open
        return [ln for ln in str(Recorder.getInstance().getText()).splitlines() if COMMAND in ln]
    try:
        recorded = _wait(recorded_lines, 15, "the recorded command")
    except TimeoutError:
        recorded = []
    report["recorded"] = recorded
    time.sleep(0.5)
    _screenshot(out / "results.png")
    if recorded:                                         # replay the recorded line as a macro, on the input
        replay = recorded[-1].replace("iterations=400", "iterations=2")
        J("ij.IJ").runMacro(f'selectImage("{image.name}"); {replay}')
        report["replayed_restored"] = sorted(str(t) for t in wm.getImageTitles() if str(t).startswith(f"{stem}_"))
        report["replay_error"] = fiji_command.last_error()
    ij.quit()
    return report



def map_session(image: Path, out: Path) -> dict:
    """Plugins > Deconvolution > Estimate PSF Map on ``image`` through its menu item and dialog; the map
    window's geometry on screen, then a screenshot of the display (``map.png``)."""
    from fiji_bridge.cli import imagej as imagej_cli
    from fiji_bridge import imagej as ijconv

    ij = imagej_cli.launch_imagej([str(image)])
    J = ijconv.jclass
    bridge, wm = J("semiblind.SemiBlindBridge"), J("ij.WindowManager")
    ActionEvent, Window, GenericDialog = J("java.awt.event.ActionEvent"), J("java.awt.Window"), J("ij.gui.GenericDialog")
    report: dict = {"menu": str(bridge.pluginsMenuPaths()).splitlines()}
    _wait(lambda: wm.getCurrentImage() is not None, 20, "the input image window")
    item = bridge.findMenuItem(MAP_COMMAND)
    for listener in item.getActionListeners():
        listener.actionPerformed(ActionEvent(item, ActionEvent.ACTION_PERFORMED, item.getActionCommand()))

    def dialog():
        return next((w for w in Window.getWindows() if isinstance(w, GenericDialog) and w.isShowing()
                     and str(w.getTitle()) == MAP_COMMAND), None)
    gd = _wait(dialog, 30, "the Estimate PSF Map dialog")
    report["dialog_choices"] = [str(c.getSelectedItem()) for c in gd.getChoices()]
    gd.actionPerformed(ActionEvent(gd.getButtons()[0], ActionEvent.ACTION_PERFORMED, "OK"))
    title = f"{image.stem}_psfmap"
    imp = _wait(lambda: wm.getImage(title), 90, "the map window")
    win = _wait(lambda: imp.getWindow() if imp.getWindow() is not None and imp.getWindow().isShowing() else None,
                20, "the map window on screen")
    win.toFront()
    time.sleep(1.5)                                      # zoom and paint
    canvas = win.getCanvas()
    loc, size = canvas.getLocationOnScreen(), canvas.getSize()
    report.update(map_size=[int(imp.getWidth()), int(imp.getHeight())], composite=bool(imp.isComposite()),
                  magnification=float(canvas.getMagnification()),
                  canvas=[int(loc.x), int(loc.y), int(size.width), int(size.height)])
    _screenshot(out / "map.png")
    ij.quit()
    return report


# ------------------------------------------------------------------------------------- the test


def _start_xvfb() -> tuple[subprocess.Popen, str]:
    """Xvfb on a free display (it picks the number and reports it on the -displayfd pipe)."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()
    if not number:
        proc.kill()
        raise RuntimeError("Xvfb did not start")
    return proc, f":{number}"


needs_display_tools = pytest.mark.skipif(not all(shutil.which(t) for t in ("Xvfb", "javac")),
                                         reason="needs Xvfb and a JDK")


@pytest.fixture(scope="module")
def display():
    """A private Xvfb display for this module's subprocesses."""
    xvfb, name = _start_xvfb()
    yield name
    xvfb.terminate()
    xvfb.wait(timeout=10)


@pytest.fixture()
def gui_image(tmp_path):
    pytest.importorskip("jpype")
    from tests.imagej.test_imagej import blurred_specimen, write_tiff
    return write_tiff(tmp_path / "gui.tif", blurred_specimen(seed=9), 0.16)


@needs_display_tools
def test_imagej_window_menu_dialog_and_results(tmp_path, display, gui_image):
    env = {**os.environ, "DISPLAY": display, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, __file__, "--session", str(gui_image), str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "Plugins>Deconvolution>Semi-Blind Deconvolution" in report["menu"]
    assert report["menu_item"] == COMMAND
    # numeric fields: iterations, stride, na, pixel_size, n (tv and wavelength are text: "auto", "0.46,0.52")
    assert float(report["dialog_defaults"][3]) == pytest.approx(0.16)        # pixel size from calibration
    assert {"gui_restored", "gui_psfmap", "gui_depth"} <= set(report["titles"])
    assert report["restored_window"] and report["restored_size"] == [160, 160]
    assert report["restored_pixel_size"] == pytest.approx(0.16) and report["last_error"] == ""
    assert any(line.startswith(f"{COMMAND}: plane 1/1: Richardson-Lucy ") for line in report["status_lines"]), \
        report["status_lines"]
    # the macro recorder wrote the dialog's values, and replaying that line works
    assert len(report["recorded"]) == 1, report["recorded"]
    line = report["recorded"][0]
    assert line.startswith(f'run("{COMMAND}", "iterations=400 tv=auto stride=0 na=')
    assert " pixel_size=0.1600 " in line and " model=[] device=cpu objective=none/custom channels=best " \
        "frames=smooth psf_map=[]" in line, line
    # the second run's windows get unique titles
    assert report["replayed_restored"] == ["gui_depth", "gui_depth-1", "gui_psfmap", "gui_psfmap-1", "gui_restored",
                                           "gui_restored-1"] and report["replay_error"] == ""
    for shot in ("imagej_window.png", "dialog.png", "results.png") if shutil.which("import") else ():
        data = (tmp_path / shot).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] in ("--session", "--map-session"):
        session = gui_session if sys.argv[1] == "--session" else map_session
        result = session(Path(sys.argv[2]), Path(sys.argv[3]))
        print(json.dumps(result), flush=True)
        os._exit(0)          # do not wait for AWT threads of the JVM
    print(__doc__, file=sys.stderr)
    sys.exit(2)


@needs_display_tools
def test_semiblind_imagej_command_runs_a_macro_and_quits(tmp_path, display, gui_image):
    """``semiblind imagej IMAGE --macro M``: the window opens, the macro uses the command, Quit returns 0."""
    macro = tmp_path / "run.ijm"
    macro.write_text(f'run("{COMMAND}", "iterations=2");\n'
                     'saveAs("Tiff", getArgument() + getTitle() + ".tif");\nrun("Quit");\n')
    env = {**os.environ, "DISPLAY": display, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "fiji_bridge.cli", "imagej", str(gui_image), "--macro", str(macro),
                           "--macro-arg", f"{tmp_path}/"], capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import tifffile
    with tifffile.TiffFile(tmp_path / "gui_restored.tif") as tif:
        assert tif.pages[0].shape == (160, 160) and tif.pages[0].dtype == "float32"


def distinct_hues(png: Path, box: list[int]) -> tuple[int, float]:
    """(number of 10°-hue bins holding at least 1 % of the coloured pixels, fraction of coloured pixels) in the
    screen rectangle ``box`` = (x, y, width, height) of a screenshot; coloured = saturation and value > 0.25."""
    from PIL import Image
    x, y, w, h = box
    hsv = np.asarray(Image.open(png).convert("RGB").crop((x, y, x + w, y + h)).convert("HSV"), dtype=float) / 255
    coloured = (hsv[..., 1] > 0.25) & (hsv[..., 2] > 0.25)
    if not coloured.any():
        return 0, 0.0
    counts = np.bincount((hsv[..., 0][coloured] * 36).astype(int) % 36, minlength=36)
    return int(np.sum(counts >= 0.01 * coloured.sum())), float(coloured.mean())


@needs_display_tools
@pytest.mark.skipif(not shutil.which("import"), reason="needs ImageMagick's import for screenshots")
def test_map_window_is_big_and_coloured(tmp_path, display):
    """Estimate PSF Map from its menu item under Xvfb: the ~11x11-pixel map opens zoomed to >= 256 screen pixels
    a side, in the Fire LUT: the screenshot's canvas is coloured (several hues), not grey."""
    pytest.importorskip("jpype")
    pytest.importorskip("PIL")
    from tests.imagej.test_imagej import blurred_specimen, write_tiff
    image = write_tiff(tmp_path / "big.tif", blurred_specimen(512, seed=9), 0.16)
    env = {**os.environ, "DISPLAY": display, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, __file__, "--map-session", str(image), str(tmp_path)],
                          capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert f"Plugins>Deconvolution>{MAP_COMMAND}" in report["menu"]
    assert report["dialog_choices"] == ["cpu", "none/custom", "best", "smooth"]
    side = max(report["map_size"])
    assert side <= 16 and report["composite"]                        # a map is a few patches a side
    x, y, w, h = report["canvas"]
    assert min(w, h) >= 256 and report["magnification"] >= 256 / side, report
    hues, coloured = distinct_hues(tmp_path / "map.png", report["canvas"])
    grey_hues, grey_coloured = distinct_hues(tmp_path / "map.png", [0, 0, 40, 20])     # the desktop corner: grey
    assert hues >= 3 and coloured > 0.3, (hues, coloured)
    assert grey_coloured < 0.05
    print(f"map window: canvas {w}x{h} px at {report['magnification']:.0f}x, {hues} hues, "
          f"{coloured:.0%} coloured pixels")
