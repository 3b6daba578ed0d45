"""``semiblind batch`` on stacks and OME-Zarr (issue 14, items 1 and 6): the planes of one file spread over every
Dask worker; ``.zarr`` folders (images, plates, pyramids) batched beside TIFFs, with the TIFF outputs' safety."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from fiji_bridge.cli import main
from fiji_bridge.io.atomic import PARTIAL_MARK, remove_stale_partials
from fiji_bridge.io.stacks import open_stack, read_stack_info
from fiji_bridge.parallel.batch import (MANIFEST_NAME, Manifest, PipelineJob, count_planes, find_inputs, run_batch,
                                        run_one)
from tests.test_stacks import _tilted

zarr = pytest.importorskip("zarr")

FAST = ["--iterations", "2", "--tv", "0", "--quiet"]
SIZE = (96, 96)


def _ngff(path: Path, data: np.ndarray, *, levels: int = 1, global_scale: float | None = None) -> None:
    """A TCYX OME-Zarr (NGFF 0.4) written with zarr directly: 20 s frames, 0.16 µm pixels, GFP/RFP, optionally
    with coarser levels (random pixels: only level 0 may be read) and a multiscale-wide scale."""
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    datasets = []
    for k in range(levels):
        shape = data.shape[:-2] + tuple(n >> k for n in data.shape[-2:])
        level = data if k == 0 else np.random.default_rng(k).integers(0, 9, shape).astype(data.dtype)
        group.create_array(str(k), shape=shape, chunks=(1, 1, *shape[-2:]), dtype=data.dtype)[...] = level
        px = 0.16 * 2 ** k / (global_scale or 1.0)
        datasets.append({"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": [20.0, 1.0, px, px]}]})
    ms = {"version": "0.4", "axes": [{"name": "t", "type": "time", "unit": "second"}, {"name": "c", "type": "channel"},
                                     {"name": "y", "type": "space", "unit": "micrometer"},
                                     {"name": "x", "type": "space", "unit": "micrometer"}], "datasets": datasets}
    if global_scale:
        ms["coordinateTransformations"] = [{"type": "scale", "scale": [1.0, 1.0, global_scale, global_scale]}]
    group.attrs["multiscales"] = [ms]
    group.attrs["omero"] = {"channels": [{"label": "GFP"}, {"label": "RFP"}]}


def _plate(path: Path, data: np.ndarray) -> None:
    """An HCS plate (NGFF 0.4): wells A/1 and B/2, one field each, each field a TCYX image."""
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.attrs["plate"] = {"version": "0.4", "name": "test plate", "rows": [{"name": "A"}, {"name": "B"}],
                            "columns": [{"name": "1"}, {"name": "2"}],
                            "wells": [{"path": "A/1", "rowIndex": 0, "columnIndex": 0},
                                      {"path": "B/2", "rowIndex": 1, "columnIndex": 1}]}
    for k, well in enumerate(("A/1", "B/2")):
        zarr.open_group(str(path / well), mode="w", zarr_format=2).attrs["well"] = {
            "version": "0.4", "images": [{"path": "0"}]}
        _ngff(path / well / "0", data[:, ::-1] if k else data)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> np.ndarray:
    """A 2-frame x 2-channel time-lapse of a tilted specimen (uint16, 96²)."""
    rng = np.random.default_rng(14)
    return np.stack([np.stack([_tilted(rng, 300.0, shape=SIZE)[1] for _ in range(2)])
                     for _ in range(2)]).astype(np.uint16)


def _ome_tiff(path: Path, data: np.ndarray) -> Path:
    tifffile.imwrite(path, data, ome=True, metadata={
        "axes": "TCYX", "PhysicalSizeX": 0.16, "PhysicalSizeY": 0.16, "TimeIncrement": 20.0, "TimeIncrementUnit": "s",
        "Channel": {"Name": ["GFP", "RFP"]}})
    return path


def _no_temporaries(folder: Path) -> None:
    left = [p for p in folder.rglob("*") if PARTIAL_MARK in p.name]
    assert left == [], left


# ------------------------------------------------------------------------------------ planes on every worker

def test_one_stack_file_spreads_its_planes_over_every_worker(tmp_path, stack):
    distributed = pytest.importorskip("distributed")
    from fiji_bridge.parallel.dask_engine import open_client
    (tmp_path / "in").mkdir()
    _ome_tiff(tmp_path / "in" / "tc.ome.tif", stack)
    job = PipelineJob({"iterations": 2, "tv": 0.0})
    with open_client(workers=2) as client, distributed.get_task_stream(client) as stream:
        summary = run_batch(job, tmp_path / "in", tmp_path / "out", client=client, progress=False)
    assert summary.ok and summary.done == ["tc.ome.tif"], summary.report()
    names = [(r["key"] if isinstance(r["key"], str) else r["key"][0]).rsplit("-", 5)[0] for r in stream.data]
    workers = {r["worker"] for r, n in zip(stream.data, names) if n == "_restore_plane"}
    # one task per plane (the best channel's 2 maps, 4 restorations), on both workers, beside the file's task
    assert (names.count("run_one"), names.count("_estimate_plane"), names.count("_restore_plane")) == (1, 2, 4)
    assert len(workers) == 2, workers
    # the same planes, in the same order, as the file run in this process alone
    assert main(["deconvolve", str(tmp_path / "in" / "tc.ome.tif"), "-o", str(tmp_path / "alone.ome.tif"),
                 "--iterations", "2", "--tv", "0", "--quiet"]) == 0
    np.testing.assert_allclose(tifffile.imread(tmp_path / "out" / "tc.ome.tif"),
                               tifffile.imread(tmp_path / "alone.ome.tif"), rtol=1e-5, atol=1e-3)


def test_count_planes_over_positions(tmp_path, stack):
    _plate(tmp_path / "plate.zarr", stack)
    _ome_tiff(tmp_path / "tc.ome.tif", stack)
    (tmp_path / "bad.tif").write_bytes(b"not a TIFF")
    assert [count_planes(tmp_path / n) for n in ("plate.zarr", "tc.ome.tif", "bad.tif")] == [8, 4, 1]


# ------------------------------------------------------------------------------------ OME-Zarr in a batch

def test_batch_of_tiff_and_ome_zarr_keeps_each_kind_and_its_metadata(tmp_path, stack):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    _ome_tiff(src / "tc.ome.tif", stack)
    _ngff(src / "tc.zarr", stack)
    _plate(src / "plate.zarr", stack)
    (src / "notes.txt").write_text("not an image")
    assert [p.name for p in find_inputs(src)] == ["plate.zarr", "tc.ome.tif", "tc.zarr"]
    assert main(["batch", str(src), "-o", str(dst), "--workers", "1", "--pyramid", "2",
                 "--wavelength", "0.53,0.6", *FAST]) == 0
    tif, img = open_stack(dst / "tc.ome.tif"), open_stack(dst / "tc.zarr")
    assert (tif.kind, tif.axes, tif.shape) == ("ome", "TCYX", stack.shape)
    for st in (tif, img, open_stack(dst / "plate.zarr" / "B" / "2" / "0")):
        assert st.axes == "TCYX" and st.pixel_size == pytest.approx(0.16)
        assert st.optics.time_interval == pytest.approx(20.0) and st.optics.channel_names == ["GFP", "RFP"]
    assert img.kind == "zarr" and img.optics.wavelengths == [0.53, 0.6]
    # a pyramid for the OME-Zarr outputs only (asked for with --pyramid 2), on the same physical grid
    level1 = zarr.open_group(str(dst / "tc.zarr"), mode="r")
    assert level1["1"].shape == (2, 2, 48, 48) and "2" not in level1
    np.testing.assert_allclose(level1["1"][1, 0], img.plane((1, 0)).reshape(48, 2, 48, 2).mean((1, 3)), rtol=1e-5)
    with tifffile.TiffFile(dst / "tc.ome.tif") as t:
        assert len(t.series[0].levels) == 1
    # the plate keeps its layout and metadata; each position restored on its own
    plate = zarr.open_group(str(dst / "plate.zarr"), mode="r")
    assert plate.attrs["plate"]["name"] == "test plate" and plate["A/1"].attrs["well"]["images"] == [{"path": "0"}]
    assert read_stack_info(dst / "plate.zarr" / "A" / "1" / "0")["source"] == "0"
    np.testing.assert_allclose(open_stack(dst / "plate.zarr" / "A" / "1" / "0").plane((0, 0)),
                               img.plane((0, 0)), rtol=1e-5, atol=1e-3)
    records = Manifest(dst / MANIFEST_NAME).load()
    assert {r["output"] for r in records.values()} == {"tc.ome.tif", "tc.zarr", "plate.zarr"}
    assert all(r["options"]["pyramid"] == 2 for r in records.values())
    _no_temporaries(dst)


def test_rerun_skips_unchanged_ome_zarr_and_redoes_a_changed_chunk(tmp_path, stack):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    _ngff(src / "a.zarr", stack)
    _ngff(src / "b.zarr", stack)
    job = PipelineJob({"iterations": 2, "tv": 0.0})
    assert run_batch(job, src, dst, progress=False).done == ["a.zarr", "b.zarr"]
    again = run_batch(job, src, dst, progress=False)
    assert again.done == [] and again.skipped == ["a.zarr", "b.zarr"]
    arr = zarr.open_array(str(src / "b.zarr" / "0"), mode="r+")
    arr[1, 1] = np.asarray(arr[1, 1])[::-1]                     # one chunk rewritten deep inside
    os.utime(src / "b.zarr" / "0" / "1.1.0.0", ns=(1, 2 * 10 ** 18))
    third = run_batch(job, src, dst, progress=False)
    assert third.done == ["b.zarr"] and third.skipped == ["a.zarr"]


def test_a_failing_ome_zarr_job_leaves_no_output_and_no_temporary_folder(tmp_path):
    (tmp_path / "in.zarr").mkdir()

    def half_then_fail(in_path: Path, out_path: Path) -> dict:
        (out_path / "0").mkdir()
        (out_path / "0" / "0.0").write_bytes(b"half")
        raise RuntimeError("disk on fire")
    result = run_one(half_then_fail, tmp_path / "in.zarr", tmp_path / "out.zarr")
    assert result["status"] == "failed" and "disk on fire" in result["reason"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr"]


def test_stale_temporary_folders_are_removed_and_live_ones_kept(tmp_path):
    stale, live = tmp_path / f".a.zarr{PARTIAL_MARK}0123456789ab.zarr", tmp_path / f".b.zarr{PARTIAL_MARK}ba9876543210.zarr"
    for folder in (stale, live):
        (folder / "0").mkdir(parents=True)
        (folder / "0" / ".zarray").write_text("{}")
    import fcntl
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)          # as `atomic_dir` holds it while writing
        assert remove_stale_partials(tmp_path, recursive=True) == [stale]
        assert live.is_dir() and not stale.exists()
    finally:
        os.close(fd)
    assert remove_stale_partials(tmp_path) == [live]


# ------------------------------------------------------------------------------------ refused input

@pytest.mark.parametrize("argv, message", [
    (["batch", "{in}", "-o", "{out}", "--pyramid", "0"], "argument --pyramid: expected a whole number of levels"),
    (["batch", "{in}", "-o", "{out}", "--pattern", "../*.zarr"], "reaches outside the input folder"),
    (["deconvolve", "{in}/tc.zarr", "-o", "{out}.tif", "--pyramid", "2"], "pyramid: only OME-Zarr outputs"),
    (["deconvolve", "{in}/tc.zarr", "-o", "{in}/tc.zarr"], "refusing to overwrite the input file"),
    (["deconvolve", "{in}/tc.zarr", "-o", "{out}.zarr", "--pyramid", "9"], "pyramid: 9 levels need planes of at "
                                                                           "least 256 pixels a side"),
    (["deconvolve", "{in}/plate.zarr", "-o", "{out}.zarr", "--map", "{out}.tif"], "map: plate.zarr holds 2 positions"),
    (["deconvolve", "{in}/plate.zarr", "-o", "{out}.tif"], "give OUT.zarr, not out.tif"),
    (["deconvolve", "{in}/plate.zarr", "-o", "{in}/plate.zarr/out.zarr"], "refusing to overwrite the input file"),
])
def test_bad_ome_zarr_input_is_one_line_exit_2_and_writes_nothing(tmp_path, stack, capsys, argv, message):
    src = tmp_path / "in"
    src.mkdir()
    _ngff(src / "tc.zarr", stack)
    _plate(src / "plate.zarr", stack)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    code = main([a.replace("{in}", str(src)).replace("{out}", str(tmp_path / "out")) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert "Traceback" not in err and sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_multiscale_input_reads_level_0_with_the_multiscale_scale(tmp_path, stack):
    _ngff(tmp_path / "pyr.zarr", stack, levels=3, global_scale=2.0)
    st = open_stack(tmp_path / "pyr.zarr")
    assert st.shape == stack.shape and st.pixel_size == pytest.approx(0.16)
    np.testing.assert_array_equal(st.plane((1, 1)), stack[1, 1])
    shutil.rmtree(tmp_path / "pyr.zarr" / "2")                     # coarser levels are never read
    np.testing.assert_array_equal(open_stack(tmp_path / "pyr.zarr").plane((0, 1)), stack[0, 1])


def test_manifest_records_final_ome_zarr_outputs(tmp_path, stack):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    _ngff(src / "a.zarr", stack)
    assert main(["batch", str(src), "-o", str(dst), "--workers", "1", *FAST]) == 0
    record = json.loads((dst / MANIFEST_NAME).read_text().splitlines()[-1])
    assert record["info"]["outputs"] == [str(dst / "a.zarr")] and record["info"]["format"] == "zarr"
    assert zarr.open_group(str(dst / "a.zarr"), mode="r").attrs["multiscales"][0]["datasets"][0]["path"] == "0"


def test_bioformats2raw_series_are_positions_and_their_layout_is_copied(tmp_path, stack):
    from fiji_bridge.io.omezarr import image_paths, write_layout
    root = zarr.open_group(str(tmp_path / "series.zarr"), mode="w", zarr_format=2)
    root.attrs["bioformats2raw.layout"] = 3
    zarr.open_group(str(tmp_path / "series.zarr" / "OME"), mode="w", zarr_format=2).attrs["series"] = ["0", "1"]
    for name in ("1", "0"):
        _ngff(tmp_path / "series.zarr" / name, stack[:1])
    assert image_paths(tmp_path / "series.zarr") == ["0", "1"]          # the OME group is no image
    (tmp_path / "out").mkdir()
    write_layout(tmp_path / "series.zarr", tmp_path / "out", ["0", "1"])
    assert zarr.open_group(str(tmp_path / "out"), mode="r").attrs.asdict() == {"bioformats2raw.layout": 3}
