import subprocess
import sys

import numpy as np
import pytest
import tifffile

from fiji_bridge.cli import main
from fiji_bridge.io.tiff import read_image, read_info


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    assert main(["simulate", "-o", str(out), "--size", "192", "--seed", "3", "--quiet"]) == 0
    return out


def test_psf_command_writes_calibrated_tiff(tmp_path):
    out = tmp_path / "psf.tif"
    assert main(["psf", "--na", "0.8", "--wavelength", "0.52", "--pixel-size", "0.1", "--defocus", "0.2",
                 "--astig-0", "0.05", "--zernike", "11=0.1,4=0.05", "--size", "33", "-o", str(out), "--quiet"]) == 0
    img = read_image(out)
    assert img.data.shape == (33, 33) and img.data.dtype == np.float32
    assert img.pixel_size == pytest.approx(0.1) and img.data.sum() == pytest.approx(1, abs=1e-4)
    info = read_info(out)
    assert info["zernike_waves_rms"] == {"4": pytest.approx(0.25), "11": 0.1, "6": 0.05}
    assert info["optics"]["na"] == 0.8


def test_simulate_writes_truth_and_maps(sim_dir):
    names = sorted(p.name for p in sim_dir.iterdir())
    assert names == sorted(f"{n}{s}.tif" for n in ("quadrants", "tilted") for s in ("", "_truth", "_true_map"))
    with tifffile.TiffFile(sim_dir / "quadrants_true_map.tif") as tif:
        assert tif.imagej_metadata["Labels"] == ["defocus", "astigmatism_0", "astigmatism_45"]


def test_deconvolve_round_trips_calibration_and_writes_map_and_report(sim_dir, tmp_path):
    src = tmp_path / "in16.tif"
    data = read_image(sim_dir / "quadrants.tif").data
    tifffile.imwrite(src, np.clip(data, 0, 65535).astype(np.uint16), imagej=True,
                     resolution=(1 / 0.17, 1 / 0.17), metadata={"unit": "micron"})
    out, mp, rep = tmp_path / "out.tif", tmp_path / "map.tif", tmp_path / "report.png"
    assert main(["deconvolve", str(src), "-o", str(out), "--map", str(mp), "--report", str(rep),
                 "--iterations", "5", "--quiet"]) == 0
    restored = read_image(out)
    assert restored.data.dtype == np.float32 and restored.data.shape == data.shape
    assert restored.pixel_size == pytest.approx(0.17)
    assert not np.allclose(restored.data, data)
    info = read_info(out)
    assert info["optics"]["pixel_size"] == pytest.approx(0.17) and info["iterations"] == 5
    with tifffile.TiffFile(mp) as tif:
        labels = tif.imagej_metadata["Labels"]
        meta = read_info(mp)
        stack = tif.asarray()
    # the default (envelope) model's map also says how sure each patch is, what lies beyond its range, and
    # which patches were used as they are
    assert labels == ["defocus", "astigmatism_0", "astigmatism_45", "confidence", "depth_um", "defocus_sigma",
                      "out_of_range", "reliable"]
    assert stack.shape[0] == 8 and meta["stride_px"] > 0 and meta["patch_size_px"] >= meta["stride_px"]
    assert meta["near_focus"]["weighted_fraction"] > 0.5         # small blur: read by the near-focus model
    assert meta["units"][0] == "waves RMS" and meta["units"][4] == "µm"
    assert rep.stat().st_size > 10_000 and rep.read_bytes()[:4] == b"\x89PNG"


def test_psf_map_command_and_pixel_size_flag(sim_dir, tmp_path):
    out = tmp_path / "map.tif"
    assert main(["psf-map", str(sim_dir / "tilted.tif"), "-o", str(out), "--pixel-size", "0.18", "--quiet"]) == 0
    assert read_info(out)["optics"]["pixel_size"] == 0.18


@pytest.mark.parametrize("args, match", [
    (["deconvolve", "{d}/missing.tif", "-o", "{t}/o.tif"], "not found"),
    (["deconvolve", "{d}/quadrants.tif", "-o", "{d}/quadrants.tif"], "overwrite the input"),
    (["deconvolve", "{d}/quadrants.tif", "-o", "{t}/nodir/o.tif"], "output folder"),
    (["deconvolve", "{d}/quadrants.tif", "-o", "{t}/o.tif", "--model", "{t}/none.onnx"], "model file not found"),
    (["deconvolve", "{d}/quadrants.tif", "-o", "{t}/o.tif", "--tv", "5"], "tv"),
    (["deconvolve", "{d}/quadrants.tif", "-o", "{t}/o.tif", "--pixel-size", "1.5"], "pixel"),
    (["deconvolve", "{t}/rgb.tif", "-o", "{t}/o.tif"], "RGB"),
    (["psf", "--na", "0.8", "--wavelength", "0.5", "--pixel-size", "0.1", "--size", "10", "-o", "{t}/p.tif"], "odd"),
    (["psf", "--na", "0.8", "--wavelength", "0.5", "--pixel-size", "0.1", "--zernike", "4:1", "-o", "{t}/p.tif"],
     "--zernike"),
])
def test_errors_are_one_line_and_write_nothing(sim_dir, tmp_path, capsys, args, match):
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    before = sorted(p.name for p in tmp_path.iterdir())
    src_bytes = (sim_dir / "quadrants.tif").read_bytes()
    code = main([a.format(d=sim_dir, t=tmp_path) for a in args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and match in err and "\n" not in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (sim_dir / "quadrants.tif").read_bytes() == src_bytes


def test_console_script_runs_and_fails_cleanly(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "fiji_bridge.cli", "--version"], capture_output=True, text=True)
    assert ok.returncode == 0 and "semiblind" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "fiji_bridge.cli", "deconvolve", str(tmp_path / "x.tif"),
                          "-o", str(tmp_path / "y.tif")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
