"""Hyperstacks made and opened by real ImageJ 1 through `semiblind` (issue 14): a TZC hyperstack saved by
ImageJ is read with its axes and calibration, and the restored file opens in ImageJ as the same hyperstack
(channels, slices, frames, pixel size, z step, frame interval, channel labels, Info)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

jpype = pytest.importorskip("jpype")
pytest.importorskip("scyjava")

from fiji_bridge import imagej as ijconv  # noqa: E402


def _ij_available() -> bool:
    try:
        ijconv.find_ij_jar()
    except ValueError:
        return False
    return shutil.which("java") is not None


pytestmark = pytest.mark.skipif(not _ij_available(), reason="ImageJ 1 (libij-java) or a JDK is not installed")


@pytest.fixture(scope="module")
def IJ():
    ijconv.start_jvm(headless=True)
    return jpype.JClass("ij.IJ")


def test_imagej_hyperstack_in_and_out(IJ, tmp_path):
    from tests.test_stacks import _tilted
    from fiji_bridge.io.stacks import open_stack, read_stack_info
    from fiji_bridge.stacks import process_stack_file
    rng = np.random.default_rng(0)
    planes = [_tilted(rng, 300.0, shape=(128, 128))[1] for _ in range(8)]       # 2 frames x 2 slices x 2 channels
    imp = IJ.createHyperStack("in", 128, 128, 2, 2, 2, 16)
    stack = imp.getStack()
    for k, plane in enumerate(planes):
        c, z, t = k % 2, (k // 2) % 2, k // 4
        index = imp.getStackIndex(c + 1, z + 1, t + 1)
        stack.setPixels(jpype.JArray(jpype.JShort)(np.clip(plane, 0, 32767).astype(np.int16).ravel().tolist()),
                        index)
        stack.setSliceLabel(["DAPI", "GFP"][c], index)
    cal = imp.getCalibration()
    cal.pixelWidth = cal.pixelHeight = 0.16
    cal.pixelDepth = 0.4
    cal.frameInterval = 30.0
    cal.setUnit("micron")
    IJ.saveAsTiff(imp, str(tmp_path / "in.tif"))
    st = open_stack(tmp_path / "in.tif")
    assert (st.axes, st.shape, st.kind) == ("TZCYX", (2, 2, 2, 128, 128), "imagej")
    assert st.pixel_size == pytest.approx(0.16) and st.optics.z_spacing == pytest.approx(0.4)
    assert st.optics.time_interval == pytest.approx(30.0) and st.optics.channel_names == ["DAPI", "GFP"]
    process_stack_file(tmp_path / "in.tif", tmp_path / "out.tif", iterations=3, tv=0.0, wavelength=[0.46, 0.52])
    out = IJ.openImage(str(tmp_path / "out.tif"))
    assert out.isHyperStack() and (out.getNChannels(), out.getNSlices(), out.getNFrames()) == (2, 2, 2)
    assert out.getBitDepth() == 32
    c = out.getCalibration()
    assert (c.pixelWidth, c.pixelDepth, c.frameInterval) == pytest.approx((0.16, 0.4, 30.0))
    assert str(c.getUnit()) in ("micron", "µm")
    assert str(out.getStack().getSliceLabel(out.getStackIndex(2, 1, 1))).startswith("GFP")
    info = read_stack_info(tmp_path / "out.tif")
    assert info["wavelengths"] == [0.46, 0.52] and info["channel_names"] == ["DAPI", "GFP"]
    assert "optics" in str(out.getProperty("Info"))
