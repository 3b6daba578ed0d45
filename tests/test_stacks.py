"""Stacks (issue 14): T/Z/C hyperstacks in and out, what each axis means, optics from OME metadata and
objective presets, PSF-map files reused."""
import json

import numpy as np
import pytest
import tifffile

from fiji_bridge import deconvolve
from fiji_bridge.estimation.model import PSFModel
from fiji_bridge.io.map_file import load_psf_map
from fiji_bridge.io.ome import parse_ome
from fiji_bridge.io.stacks import open_stack, read_stack_info, write_stack
from fiji_bridge.optics.parameters import Optics
from fiji_bridge.optics.psf import psf_batch
from fiji_bridge.pipeline import write_psf_map
from fiji_bridge.simulation.simulate import blur_beyond_field
from fiji_bridge.simulation.specimens import mixture
from fiji_bridge.stacks import deconvolve_stack, flicker, process_stack_file, stack_optics

CFG = PSFModel().config
LAMS = (0.53, 0.60)


def _tilted(rng, photons: float, lam: float = LAMS[0], shape=(256, 256), nodes: int = 8):
    """A specimen on a tilted plane seen at emission wavelength ``lam``: the same *physical* defocus for
    every wavelength (coefficients in waves scale as 1/λ). Returns (truth, blurred, true defocus at ``lam``
    as a function of x)."""
    xs = (np.arange(nodes) + 0.5) * shape[1] / nodes - 0.5
    c_ref = 0.02 + 0.3 * xs / (shape[1] - 1)                  # waves at LAMS[0]
    optics = Optics(na=CFG.optics.na, wavelength=lam, pixel_size=CFG.optics.pixel_size, n=CFG.optics.n)
    coeffs = np.zeros((nodes, len(CFG.nolls)))
    coeffs[:, CFG.names.index("defocus")] = c_ref * LAMS[0] / lam
    psfs = psf_batch(optics, CFG.nolls, coeffs, 51)[None]
    truth = (mixture(shape, rng) * photons + 0.05 * photons).astype(np.float32)
    blurred = rng.poisson(np.clip(blur_beyond_field(truth, psfs), 0, None)).astype(np.float32)
    return truth, blurred, (lambda x: np.interp(x, xs, c_ref * LAMS[0] / lam))


def _nrmse(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.std(b))


def _map_error(m, true_defocus):
    return float(np.sqrt(np.mean((m.parameter("defocus") - true_defocus(m.centres_x)[None]) ** 2)))


# ------------------------------------------------------------------------------------------------ I/O

def test_imagej_hyperstack_round_trip_keeps_axes_and_calibration(tmp_path):
    shape = (2, 3, 2, 40, 50)                                    # T Z C Y X
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    labels = [f"p{i}" for i in range(12)]
    write_stack(tmp_path / "a.tif", iter(data.reshape(-1, 40, 50)), shape, "TZCYX", pixel_size=0.1,
                z_spacing=0.3, time_interval=2.0, labels=labels, info={"channel_names": ["DAPI", "GFP"]})
    st = open_stack(tmp_path / "a.tif")
    assert (st.axes, st.shape, st.kind) == ("TZCYX", shape, "imagej")
    assert st.pixel_size == pytest.approx(0.1) and st.optics.z_spacing == pytest.approx(0.3)
    assert st.optics.time_interval == pytest.approx(2.0) and st.optics.channel_names == ["DAPI", "GFP"]
    for index in [(0, 0, 0), (1, 2, 1), (0, 1, 1)]:
        np.testing.assert_array_equal(st.plane(index), data[index])
    assert read_stack_info(tmp_path / "a.tif")["channel_names"] == ["DAPI", "GFP"]


def test_ome_round_trip_keeps_channels_time_and_wavelengths(tmp_path):
    shape = (3, 2, 32, 48)
    data = np.random.default_rng(0).integers(0, 4000, shape).astype(np.uint16)
    tifffile.imwrite(tmp_path / "in.ome.tif", data, ome=True, compression="zlib", metadata={
        "axes": "TCYX", "PhysicalSizeX": 120.0, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 120.0,
        "PhysicalSizeYUnit": "nm", "TimeIncrement": 500.0, "TimeIncrementUnit": "ms",
        "Channel": {"Name": ["GFP", "mCherry"], "EmissionWavelength": [510.0, 610.0],
                    "EmissionWavelengthUnit": ["nm", "nm"]}})
    st = open_stack(tmp_path / "in.ome.tif")                     # compressed: planes through tifffile pages
    assert (st.axes, st.kind) == ("TCYX", "ome")
    assert st.pixel_size == pytest.approx(0.12) and st.optics.time_interval == pytest.approx(0.5)
    assert st.optics.wavelengths == pytest.approx([0.51, 0.61])
    assert st.optics.channel_names == ["GFP", "mCherry"]
    np.testing.assert_array_equal(st.plane((2, 1)), data[2, 1])
    write_stack(tmp_path / "out.ome.tif", (p for p in data.reshape(-1, 32, 48)), shape, "TCYX", kind="ome",
                pixel_size=0.12, time_interval=0.5, channel_names=["GFP", "mCherry"], wavelengths=[0.51, 0.61],
                info={"x": 1})
    out = open_stack(tmp_path / "out.ome.tif")
    assert (out.axes, out.shape, out.kind) == ("TCYX", shape, "ome")
    assert out.optics.channel_names == ["GFP", "mCherry"] and out.optics.time_interval == pytest.approx(0.5)
    assert out.optics.wavelengths == pytest.approx([0.51, 0.61]) and out.pixel_size == pytest.approx(0.12)
    assert read_stack_info(tmp_path / "out.ome.tif") == {"x": 1}


def test_bad_stacks_are_one_line_errors(tmp_path):
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    with pytest.raises(ValueError, match="RGB"):
        open_stack(tmp_path / "rgb.tif")
    with pytest.raises(ValueError, match="not found"):
        open_stack(tmp_path / "missing.tif")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff")
    with pytest.raises(ValueError, match="cannot read") as err:
        open_stack(tmp_path / "junk.tif")
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------ C

def test_channels_share_one_physical_map_rendered_per_wavelength():
    """A dim channel (20 photons) next to a bright one (300 photons) on the same tilted specimen: the map of
    the bright channel, converted to the dim channel's wavelength (c·λ1/λ2), restores the dim channel
    better than estimating it alone; the bright channel is unchanged."""
    rows = {"independent": [], "best": []}
    for seed in range(2):
        rng = np.random.default_rng(seed)
        sims = [_tilted(rng, photons, lam) for photons, lam in zip((300.0, 20.0), LAMS)]
        blurred = np.stack([b for _, b, _ in sims])
        for mode in rows:
            out = deconvolve_stack(blurred, "CYX", wavelengths=LAMS, channels=mode, iterations=30, tv=0.01)
            rows[mode].append([_nrmse(out.image[c], sims[c][0]) for c in range(2)]
                              + [_map_error(out.maps[(c,)], sims[c][2]) for c in range(2)])
            if mode == "best":
                m0, m1 = out.maps[(0,)], out.maps[(1,)]
                assert out.settings["best_channel"] == 0
                # same physical path difference: c(λ2) = c(λ1)·λ1/λ2
                np.testing.assert_allclose(m1.parameters * LAMS[1], m0.parameters * LAMS[0], rtol=1e-5, atol=1e-7)
                assert m1.optics.wavelength == LAMS[1]
    ind, best = np.mean(rows["independent"], 0), np.mean(rows["best"], 0)
    print("2-channel 300/20 photons, NRMSE ch0 ch1, map RMSE ch0 ch1 (waves): independent", ind, "best", best)
    assert best[1] < ind[1] - 0.05                 # dim channel restored better (measured 1.07 vs 1.20)
    assert best[3] < 0.5 * ind[3]                  # its map much closer to the truth (0.025 vs 0.102 waves)
    assert best[0] == pytest.approx(ind[0], abs=1e-6)


def test_joint_channels_average_path_differences():
    rng = np.random.default_rng(5)
    blurred = np.stack([_tilted(rng, 200.0, lam)[1] for lam in LAMS])
    joint = deconvolve_stack(blurred, "CYX", wavelengths=LAMS, channels="joint", iterations=5, tv=0.0)
    alone = deconvolve_stack(blurred, "CYX", wavelengths=LAMS, channels="independent", iterations=5, tv=0.0)
    from fiji_bridge.stacks import _interp
    grid = (joint.maps[(0,)].centres_y, joint.maps[(0,)].centres_x)      # each channel alone on its own grid
    opd = [_interp(alone.maps[(c,)].parameters, alone.maps[(c,)].centres_y, alone.maps[(c,)].centres_x, *grid)
           * LAMS[c] for c in range(2)]
    shared = joint.maps[(0,)].parameters * LAMS[0]
    np.testing.assert_allclose(joint.maps[(1,)].parameters * LAMS[1], shared, rtol=1e-5, atol=1e-7)
    lo, hi = np.minimum(*opd), np.maximum(*opd)
    assert np.all(shared >= lo - 1e-6) and np.all(shared <= hi + 1e-6)     # a weighted mean of the two


# ------------------------------------------------------------------------------------------------ T

def test_time_lapse_maps_do_not_flicker():
    """Six frames of the same tilted field (new noise and specimen each frame): per-frame maps flicker,
    smoothed maps much less, one map not at all."""
    rng = np.random.default_rng(11)
    frames = np.stack([_tilted(rng, 100.0)[1] for _ in range(6)])
    out = {mode: deconvolve_stack(frames, "TYX", frames=mode, iterations=3, tv=0.0)
           for mode in ("independent", "smooth", "single")}
    f = {mode: flicker([r.maps[(t,)] for t in range(6)]) for mode, r in out.items()}
    print("flicker (RMS frame-to-frame defocus change, waves):", f)
    assert f["single"] == 0.0
    assert f["smooth"] < 0.5 * f["independent"]
    assert out["smooth"].settings["flicker_waves"]["used"] == pytest.approx(f["smooth"])
    assert out["smooth"].settings["frames"] == "smooth"


# ------------------------------------------------------------------------------------------------ Z

def test_z_planes_are_independent_2d_images():
    rng = np.random.default_rng(2)
    planes = np.stack([_tilted(rng, 300.0)[1] for _ in range(2)])
    out = deconvolve_stack(planes, "ZYX", iterations=10, tv=0.005)
    for z in range(2):
        alone = deconvolve(planes[z], iterations=10, tv=0.005)
        np.testing.assert_allclose(out.maps[(z,)].parameters, alone.psf_map.parameters, atol=1e-6)
        np.testing.assert_allclose(out.image[z], alone.image, rtol=1e-4, atol=1e-3)


# ------------------------------------------------------------------------------------------------ optics

def _oil_ome(path, data, axes="YX"):
    """An OME-TIFF from a 60x/1.4 oil objective (Instrument/Objective/ObjectiveSettings, as Bio-Formats and
    vendor software write them)."""
    tifffile.imwrite(path, data, ome=True, metadata={
        "axes": axes, "PhysicalSizeX": 0.085, "PhysicalSizeY": 0.085,
        "Channel": {"Name": ["GFP"], "EmissionWavelength": [525.0], "EmissionWavelengthUnit": ["nm"]}})
    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata
    xml = xml.replace("<Image ", '<Instrument ID="Instrument:0"><Objective ID="Objective:0:0" LensNA="1.4" '
                                 'Immersion="Oil" NominalMagnification="60"/></Instrument><Image ', 1)
    xml = xml.replace("<Pixels ", '<InstrumentRef ID="Instrument:0"/><ObjectiveSettings ID="Objective:0:0" '
                                  'RefractiveIndex="1.515"/><Pixels ', 1)
    tifffile.tiffcomment(path, xml.encode())


def test_ome_oil_objective_deconvolves_with_no_flags(tmp_path):
    rng = np.random.default_rng(3)
    image = _tilted(rng, 500.0)[1].astype(np.uint16)
    _oil_ome(tmp_path / "oil.ome.tif", image)
    fo = parse_ome(tifffile.TiffFile(tmp_path / "oil.ome.tif").ome_metadata)
    assert (fo.na, fo.n, fo.objective) == (1.4, 1.515, "60x/1.4-oil")
    done = process_stack_file(tmp_path / "oil.ome.tif", tmp_path / "out.ome.tif", iterations=5, tv=0.0)
    assert done["optics"] == {"na": 1.4, "wavelength": 0.525, "pixel_size": 0.085, "n": 1.515}
    assert done["optics_sources"]["na"] == "OME Objective LensNA"
    info = read_stack_info(tmp_path / "out.ome.tif")
    assert info["optics"]["na"] == 1.4 and info["objective"] == "60x/1.4-oil"
    assert open_stack(tmp_path / "out.ome.tif").kind == "ome"


def test_objective_presets_and_precedence():
    model = CFG.optics
    optics, src = stack_optics(None, model, objective="60x/1.4-oil")
    assert (optics[0].na, optics[0].n, src["na"]) == (1.4, 1.518, "objective 60x/1.4-oil")
    optics, src = stack_optics(None, model, objective="60x/1.4-oil", na=1.3)          # explicit wins
    assert (optics[0].na, optics[0].n) == (1.3, 1.518)
    from fiji_bridge.io.ome import FileOptics
    optics, src = stack_optics(FileOptics(na=1.3), model)                 # a file's NA >= 1 alone: oil implied
    assert optics[0].n == 1.518 and src["n"].startswith("inferred")
    with pytest.raises(ValueError, match=r"na \(1.3\) must be smaller than the refractive index.*objective preset"):
        stack_optics(None, model, na=1.3)                                 # explicit values are not second-guessed
    optics, _ = stack_optics(None, model, 2, wavelength=[0.5, 0.6])
    assert [o.wavelength for o in optics] == [0.5, 0.6]
    with pytest.raises(ValueError, match="objective: unknown preset"):
        stack_optics(None, model, objective="61x/9-oil")
    with pytest.raises(ValueError, match="wavelength: 1 wavelengths given for 2 channels"):
        stack_optics(None, model, 2, wavelength=[0.5])


# ------------------------------------------------------------------------------------------------ maps

def test_map_round_trip_restores_the_same(tmp_path):
    rng = np.random.default_rng(4)
    image = _tilted(rng, 400.0)[1]
    first = deconvolve(image, iterations=12, tv=0.004)
    write_psf_map(tmp_path / "map.tif", first.psf_map)
    again = deconvolve(image, iterations=12, tv=0.004, psf_map=load_psf_map(tmp_path / "map.tif"))
    np.testing.assert_allclose(again.image, first.image, atol=1e-5 * float(np.abs(first.image).max()))
    np.testing.assert_allclose(again.psfs, first.psfs, atol=1e-5)


def test_stack_file_streams_planes_and_its_map_file_reloads(tmp_path):
    rng = np.random.default_rng(6)
    data = np.stack([np.stack([_tilted(rng, 200.0, lam)[1] for lam in LAMS]) for _ in range(2)]).astype(np.uint16)
    tifffile.imwrite(tmp_path / "tc.tif", data, imagej=True, resolution=(1 / 0.16, 1 / 0.16),
                     metadata={"axes": "TCYX", "unit": "micron", "finterval": 3.0})
    done = process_stack_file(tmp_path / "tc.tif", tmp_path / "out.tif", map_path=tmp_path / "map.tif",
                              wavelength=list(LAMS), iterations=4, tv=0.0)
    out = open_stack(tmp_path / "out.tif")
    assert (out.axes, out.shape, out.kind) == ("TCYX", data.shape, "imagej")
    assert out.pixel_size == pytest.approx(0.16) and out.optics.time_interval == pytest.approx(3.0)
    assert done["maps"]["channels"] == "best" and "flicker_waves" in done["maps"]
    # the map of plane (t=1, c=1) reloads at its channel's wavelength and restores that plane the same
    m = load_psf_map(tmp_path / "map.tif", plane=3)
    assert m.optics.wavelength == LAMS[1]
    again = deconvolve(data[1, 1], iterations=4, tv=0.0, psf_map=m, optics=m.optics)
    np.testing.assert_allclose(out.plane((1, 1)), again.image, atol=1e-3)
    # reuse that map for the whole file: no estimation, rendered per channel
    reused = process_stack_file(tmp_path / "tc.tif", tmp_path / "reused.tif", psf_map=tmp_path / "map.tif",
                                iterations=4, tv=0.0)
    assert reused["maps"]["channels"] == "from the PSF map"


def test_bad_stack_options_name_the_parameter_and_write_nothing(tmp_path):
    image = np.zeros((2, 64, 64), np.float32)
    for kwargs, match in [({"channels": "all"}, "channels must be"), ({"frames": "x"}, "frames must be"),
                          ({"frame_sigma": 0}, "frame_sigma must be"), ({"wavelengths": [0.5]}, "wavelengths:")]:
        with pytest.raises(ValueError, match=match):
            deconvolve_stack(image, "CYX", **kwargs)
    with pytest.raises(ValueError, match="axes must"):
        deconvolve_stack(image, "QYX")
    tifffile.imwrite(tmp_path / "in.tif", np.ones((64, 64), np.uint16))
    small = deconvolve(_tilted(np.random.default_rng(0), 300.0, shape=(128, 128))[1], iterations=2, tv=0.0)
    write_psf_map(tmp_path / "small_map.tif", small.psf_map)
    with pytest.raises(ValueError, match="psf_map: the map was estimated on 128x128"):
        process_stack_file(tmp_path / "in.tif", tmp_path / "out.tif", psf_map=tmp_path / "small_map.tif")
    with pytest.raises(ValueError, match="psf_map: file not found"):
        process_stack_file(tmp_path / "in.tif", tmp_path / "out.tif", psf_map=tmp_path / "nope.tif")
    (tmp_path / "notmap.tif").write_bytes((tmp_path / "in.tif").read_bytes())
    with pytest.raises(ValueError, match="psf_map: notmap.tif is not a SemiBlind PSF map"):
        load_psf_map(tmp_path / "notmap.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "notmap.tif", "small_map.tif"]
    assert json.loads(json.dumps(small.settings))            # settings stay JSON-compatible


def test_ome_zarr_round_trip(tmp_path):
    pytest.importorskip("zarr")
    from fiji_bridge.io.omezarr import write_omezarr
    shape = (2, 3, 40, 30)                                        # T Z Y X
    data = np.random.default_rng(0).random(shape, dtype=np.float32)
    write_omezarr(tmp_path / "a.zarr", iter(data.reshape(-1, 40, 30)), shape, "TZYX", pixel_size=0.1,
                  z_spacing=0.4, time_interval=5.0, info={"x": 1})
    st = open_stack(tmp_path / "a.zarr")
    assert (st.kind, st.axes, st.shape) == ("zarr", "TZYX", shape)
    assert (st.pixel_size, st.optics.z_spacing, st.optics.time_interval) == (0.1, 0.4, 5.0)
    np.testing.assert_array_equal(st.plane((1, 2)), data[1, 2])
    assert read_stack_info(tmp_path / "a.zarr") == {"x": 1}
    with pytest.raises(ValueError, match="got 5 planes for 6"):         # a short stream: nothing left behind
        write_omezarr(tmp_path / "b.zarr", iter(data.reshape(-1, 40, 30)[:5]), shape, "TZYX")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr"]


def test_semiblind_ome_output_keeps_its_optics(tmp_path):
    write_stack(tmp_path / "o.ome.tif", iter([np.zeros((8, 8))]), (8, 8), "YX", kind="ome", pixel_size=0.1,
                info={"optics": {"na": 1.2, "n": 1.333, "wavelength": 0.6, "pixel_size": 0.1}})
    st = open_stack(tmp_path / "o.ome.tif")
    assert (st.optics.na, st.optics.n) == (1.2, 1.333)


def test_planes_distributed_on_dask_give_the_same_stack():
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(9)
    frames = np.stack([_tilted(rng, 200.0, shape=(128, 128))[1] for _ in range(3)])
    alone = deconvolve_stack(frames, "TYX", iterations=4, tv=0.001)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        spread = deconvolve_stack(frames, "TYX", iterations=4, tv=0.001, client=client)
    np.testing.assert_allclose(spread.image, alone.image, rtol=1e-6, atol=1e-6)
