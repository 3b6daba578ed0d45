"""``semiblind deconvolve`` / ``psf-map`` / ``batch`` on stacks, OME-TIFF, objective presets and saved maps
(issue 14)."""
import json

import numpy as np
import pytest
import tifffile

from fiji_bridge.cli import main
from fiji_bridge.io.map_file import load_psf_map
from fiji_bridge.io.stacks import open_stack, read_stack_info
from tests.test_stacks import LAMS, _oil_ome, _tilted


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("stacks")
    rng = np.random.default_rng(8)
    tc = np.stack([np.stack([_tilted(rng, 300.0, lam, shape=(192, 192))[1] for lam in LAMS])
                   for _ in range(2)]).astype(np.uint16)
    tifffile.imwrite(d / "tc.ome.tif", tc, ome=True, metadata={
        "axes": "TCYX", "PhysicalSizeX": 0.16, "PhysicalSizeY": 0.16, "TimeIncrement": 30.0,
        "TimeIncrementUnit": "s", "Channel": {"Name": ["GFP", "RFP"], "EmissionWavelength": [530.0, 600.0],
                                              "EmissionWavelengthUnit": ["nm", "nm"]}})
    _oil_ome(d / "oil.ome.tif", _tilted(rng, 500.0, shape=(192, 192))[1].astype(np.uint16))
    plane = _tilted(rng, 400.0, shape=(192, 192))[1].astype(np.uint16)
    tifffile.imwrite(d / "plane.tif", plane, imagej=True, resolution=(1 / 0.16, 1 / 0.16),
                     metadata={"unit": "micron"})
    z = np.stack([_tilted(rng, 300.0, shape=(192, 192))[1] for _ in range(2)]).astype(np.uint16)
    tifffile.imwrite(d / "z.tif", z, imagej=True, resolution=(1 / 0.16, 1 / 0.16),
                     metadata={"axes": "ZYX", "unit": "micron", "spacing": 0.5})
    return d


def test_two_channel_time_lapse_ome_in_ome_out(files, tmp_path, capsys):
    out, mp = tmp_path / "out.ome.tif", tmp_path / "map.tif"
    assert main(["deconvolve", str(files / "tc.ome.tif"), "-o", str(out), "--map", str(mp),
                 "--iterations", "5", "--tv", "0"]) == 0
    err = capsys.readouterr().err
    assert "4 plane(s), axes TCYX, written as OME-TIFF" in err and "flicker" in err
    st = open_stack(out)
    assert (st.kind, st.axes, st.shape) == ("ome", "TCYX", (2, 2, 192, 192))
    assert st.optics.channel_names == ["GFP", "RFP"] and st.optics.time_interval == pytest.approx(30.0)
    assert st.optics.wavelengths == pytest.approx(list(LAMS)) and st.pixel_size == pytest.approx(0.16)
    info = read_stack_info(out)
    assert info["wavelengths"] == list(LAMS) and info["maps"]["channels"] == "best"
    assert info["optics_sources"]["wavelength"] == "OME Channel EmissionWavelength"
    assert load_psf_map(mp, plane=1).optics.wavelength == LAMS[1]


def test_oil_objective_ome_needs_no_flags(files, tmp_path):
    out = tmp_path / "oil_out.ome.tif"
    assert main(["deconvolve", str(files / "oil.ome.tif"), "-o", str(out), "--iterations", "3", "--quiet"]) == 0
    info = read_stack_info(out)
    assert info["optics"] == {"na": 1.4, "wavelength": 0.525, "pixel_size": 0.085, "n": 1.515}
    assert info["objective"] == "60x/1.4-oil"


def test_psf_map_reuse_restores_the_same(files, tmp_path):
    a, mp, b = tmp_path / "a.tif", tmp_path / "m.tif", tmp_path / "b.tif"
    assert main(["deconvolve", str(files / "plane.tif"), "-o", str(a), "--map", str(mp), "--iterations", "10",
                 "--tv", "0.003", "--quiet"]) == 0
    assert main(["deconvolve", str(files / "plane.tif"), "-o", str(b), "--psf-map", str(mp), "--iterations", "10",
                 "--tv", "0.003", "--quiet"]) == 0
    ra, rb = tifffile.imread(a), tifffile.imread(b)
    np.testing.assert_allclose(rb, ra, atol=1e-5 * float(np.abs(ra).max()))
    assert read_stack_info(b)["maps"]["channels"] == "from the PSF map"


def test_z_stack_and_objective_preset(files, tmp_path):
    out = tmp_path / "z_out.tif"
    assert main(["deconvolve", str(files / "z.tif"), "-o", str(out), "--iterations", "3", "--tv", "0",
                 "--objective", "20x/0.75-air", "--quiet"]) == 0
    st = open_stack(out)
    assert (st.kind, st.axes, st.shape) == ("imagej", "ZYX", (2, 192, 192))
    assert st.optics.z_spacing == pytest.approx(0.5) and st.pixel_size == pytest.approx(0.16)
    info = read_stack_info(out)
    assert info["optics_sources"]["na"] == "objective 20x/0.75-air" and "not 3-D deconvolution" in info["note"]


def test_psf_map_command_on_a_stack(files, tmp_path):
    mp = tmp_path / "maps.tif"
    assert main(["psf-map", str(files / "tc.ome.tif"), "-o", str(mp), "--quiet"]) == 0
    assert [load_psf_map(mp, plane=k).optics.wavelength for k in range(4)] == [LAMS[0], LAMS[1]] * 2


def test_batch_with_optics_options(files, tmp_path):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in ("oil.ome.tif", "plane.tif"):
        (src / name).write_bytes((files / name).read_bytes())
    assert main(["batch", str(src), "-o", str(dst), "--workers", "1", "--quiet", "--iterations", "3",
                 "--objective", "60x/1.4-oil", "--pixel-size", "0.085"]) == 0
    for name in ("oil.ome.tif", "plane.tif"):
        info = read_stack_info(dst / name)
        assert (info["optics"]["na"], info["optics"]["n"]) == (1.4, 1.518)
    manifest = [json.loads(line) for line in (dst / "semiblind-manifest.jsonl").read_text().splitlines()]
    assert all(r.get("options", {}).get("objective") == "60x/1.4-oil" for r in manifest if r.get("status") == "done")


@pytest.mark.parametrize("argv, message", [
    (["--objective", "61x/9-oil"], "objective: unknown preset '61x/9-oil'"),
    (["--psf-map", "{d}/missing.tif"], "psf_map: file not found"),
    (["--wavelength", "0.5,0.6,0.7"], "wavelength: 3 wavelengths given for 2 channels"),
    (["--channels", "all"], "argument --channels: invalid choice"),
    (["--frames", "some"], "argument --frames: invalid choice"),
])
def test_bad_stack_options_are_one_line_and_write_nothing(files, tmp_path, capsys, argv, message):
    out = tmp_path / "o.tif"
    code = main(["deconvolve", str(files / "tc.ome.tif"), "-o", str(out),
                 *[a.replace("{d}", str(files)) for a in argv]])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


def _ngff(path, data, axes=("t", "c", "y", "x")):
    """A one-level OME-Zarr (NGFF 0.4) image written with zarr directly, as ome-zarr-py writes it."""
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", shape=data.shape, chunks=(1, 1, *data.shape[-2:]), dtype=data.dtype)[...] = data
    units = {"t": "second", "y": "micrometer", "x": "micrometer"}
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [
        {"name": a, "type": {"t": "time", "c": "channel"}.get(a, "space"), **({"unit": units[a]} if a in units else {})}
        for a in axes], "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [20.0, 1.0, 0.16, 0.16]}]}]}]
    group.attrs["omero"] = {"channels": [{"label": "GFP"}, {"label": "RFP"}]}


def test_ome_zarr_in_and_out(files, tmp_path):
    data = np.asarray(open_stack(files / "tc.ome.tif").plane((0, 0)))
    tc = np.stack([np.stack([data, data[::-1]])] * 2)
    _ngff(tmp_path / "in.zarr", tc)
    st = open_stack(tmp_path / "in.zarr")
    assert (st.kind, st.axes, st.shape) == ("zarr", "TCYX", tc.shape)
    assert st.pixel_size == pytest.approx(0.16) and st.optics.time_interval == pytest.approx(20.0)
    assert st.optics.channel_names == ["GFP", "RFP"]
    np.testing.assert_array_equal(st.plane((1, 1)), tc[1, 1])
    out = tmp_path / "out.zarr"
    assert main(["deconvolve", str(tmp_path / "in.zarr"), "-o", str(out), "--iterations", "3", "--tv", "0",
                 "--wavelength", "0.53,0.6", "--quiet"]) == 0
    res = open_stack(out)
    assert (res.kind, res.axes, res.shape, res.dtype) == ("zarr", "TCYX", tc.shape, np.float32)
    assert res.pixel_size == pytest.approx(0.16) and res.optics.time_interval == pytest.approx(20.0)
    assert res.optics.channel_names == ["GFP", "RFP"] and res.optics.wavelengths == [0.53, 0.6]
    assert read_stack_info(out)["maps"]["frames"] == "smooth"
    # the same stack through TIFF gives the same planes
    assert main(["deconvolve", str(tmp_path / "in.zarr"), "-o", str(tmp_path / "out.tif"), "--iterations", "3",
                 "--tv", "0", "--wavelength", "0.53,0.6", "--quiet"]) == 0
    np.testing.assert_allclose(open_stack(tmp_path / "out.tif").plane((1, 0)), res.plane((1, 0)), rtol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr", "out.tif", "out.zarr"]    # no temporaries
