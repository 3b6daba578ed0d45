"""Batch runner: atomic outputs, manifest, resume after kill -9, failures that do not stop the batch."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from fiji_bridge.parallel.batch import (MANIFEST_NAME, PARTIAL_MARK, BatchError, Manifest, find_inputs, run_batch,
                               run_one)
from tests.conftest import simulation_config

ROOT = Path(__file__).resolve().parents[2]


def double(in_path: Path, out_path: Path) -> dict:
    """A small job: the input times two, as float32."""
    data = tifffile.imread(in_path)
    tifffile.imwrite(out_path, data.astype(np.float32) * 2)
    return {"mean": float(data.mean())}


def make_inputs(folder: Path, n: int = 4, bad: tuple[int, ...] = ()) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i:02d}.tif"
        if i in bad:
            path.write_bytes(b"this is not a TIFF")
        else:
            tifffile.imwrite(path, np.full((8, 9), i + 1, np.uint16))
        paths.append(path)
    return paths


def check_outputs(out_dir: Path, n: int, bad: tuple[int, ...] = ()) -> None:
    for i in range(n):
        path = out_dir / f"img{i:02d}.tif"
        if i in bad:
            assert not path.exists()
        else:
            np.testing.assert_array_equal(tifffile.imread(path), np.full((8, 9), 2.0 * (i + 1), np.float32))


def test_batch_processes_every_file_and_records_it(tmp_path):
    make_inputs(tmp_path / "in")
    summary = run_batch(double, tmp_path / "in", tmp_path / "out", progress=False)
    assert summary.ok and summary.done == [f"img{i:02d}.tif" for i in range(4)] and summary.skipped == []
    check_outputs(tmp_path / "out", 4)
    records = Manifest(tmp_path / "out" / MANIFEST_NAME).load()
    assert set(records) == set(summary.done) and all(r["status"] == "done" for r in records.values())
    assert records["img01.tif"]["info"] == {"mean": 2.0} and records["img01.tif"]["output"] == "img01.tif"
    assert "4 done, 0 skipped (already done), 0 failed" in summary.report()


def test_rerun_skips_finished_and_redoes_changed_missing_and_failed(tmp_path):
    paths = make_inputs(tmp_path / "in", bad=(2,))
    first = run_batch(double, tmp_path / "in", tmp_path / "out", progress=False)
    assert [name for name, _ in first.failed] == ["img02.tif"]
    tifffile.imwrite(paths[2], np.full((8, 9), 3, np.uint16))             # fixed
    tifffile.imwrite(paths[0], np.full((8, 9), 1, np.uint16), description="changed")  # changed input
    (tmp_path / "out" / "img01.tif").unlink()                             # lost output
    second = run_batch(double, tmp_path / "in", tmp_path / "out", progress=False)
    assert sorted(second.done) == ["img00.tif", "img01.tif", "img02.tif"] and second.skipped == ["img03.tif"]
    check_outputs(tmp_path / "out", 4)
    third = run_batch(double, tmp_path / "in", tmp_path / "out", progress=False)
    assert third.done == [] and len(third.skipped) == 4


def test_one_bad_file_does_not_stop_the_batch(tmp_path):
    make_inputs(tmp_path / "in", n=5, bad=(1, 3))
    summary = run_batch(double, tmp_path / "in", tmp_path / "out", progress=False)
    assert len(summary.done) == 3 and [name for name, _ in summary.failed] == ["img01.tif", "img03.tif"]
    reason = dict(summary.failed)["img01.tif"]
    assert "TiffFileError" in reason and "\n" not in reason
    assert "failed: img01.tif: TiffFileError" in summary.report()
    check_outputs(tmp_path / "out", 5, bad=(1, 3))
    assert not any(PARTIAL_MARK in p.name for p in (tmp_path / "out").iterdir())


def test_subfolders_with_recursive_pattern(tmp_path):
    make_inputs(tmp_path / "in" / "a", n=2)
    make_inputs(tmp_path / "in" / "b", n=1)
    summary = run_batch(double, tmp_path / "in", tmp_path / "out", "**/*.tif", progress=False)
    assert summary.done == ["a/img00.tif", "a/img01.tif", "b/img00.tif"]
    check_outputs(tmp_path / "out" / "a", 2)


def test_job_that_writes_nothing_fails(tmp_path):
    make_inputs(tmp_path / "in", n=1)
    (tmp_path / "out").mkdir()
    result = run_one(lambda a, b: None, tmp_path / "in" / "img00.tif", tmp_path / "out" / "img00.tif")
    assert result["status"] == "failed" and "without writing" in result["reason"]


@pytest.mark.parametrize("case, message", [
    ("no-match", "no files matching '*.png'"),
    ("inside", "is inside the input folder"),
    ("same", "is inside the input folder"),
    ("missing", "input folder not found"),
])
def test_bad_folders_are_one_line_errors_and_create_nothing(tmp_path, case, message):
    make_inputs(tmp_path / "in", n=2)
    out = {"inside": tmp_path / "in" / "out", "same": tmp_path / "in"}.get(case, tmp_path / "out")
    in_dir = tmp_path / ("nowhere" if case == "missing" else "in")
    before = sorted(p.name for p in (tmp_path / "in").iterdir())
    with pytest.raises(BatchError, match=re.escape(message)) as info:
        run_batch(double, in_dir, out, "*.png" if case == "no-match" else "*.tif", progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "in" / "out").exists()
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == before


def test_torn_manifest_line_is_ignored(tmp_path):
    manifest = Manifest(tmp_path / MANIFEST_NAME)
    manifest.append({"input": "a.tif", "status": "done"})
    with open(manifest.path, "a") as fh:
        fh.write('{"input": "b.tif", "sta')                               # crash mid-line
    manifest.append({"input": "c.tif", "status": "failed"})
    assert sorted(manifest.load()) == ["a.tif", "c.tif"]


def test_find_inputs_ignores_temporaries(tmp_path):
    make_inputs(tmp_path, n=2)
    (tmp_path / f".img00.tif{PARTIAL_MARK}abc.tif").write_bytes(b"partial")
    assert [p.name for p in find_inputs(tmp_path)] == ["img00.tif", "img01.tif"]


SLOW_BATCH = textwrap.dedent("""
    import io, sys, time
    import numpy as np, tifffile
    from fiji_bridge.parallel.batch import run_batch

    def slow_double(in_path, out_path):
        buf = io.BytesIO()
        tifffile.imwrite(buf, tifffile.imread(in_path).astype(np.float32) * 2)
        data = buf.getvalue()
        with open(out_path, "wb") as fh:           # written in two halves, slowly: kill -9 lands mid-file
            fh.write(data[: len(data) // 2]); fh.flush(); time.sleep(0.6)
            fh.write(data[len(data) // 2:])
        return {}

    run_batch(slow_double, sys.argv[1], sys.argv[2], progress=False)
""")


def test_kill_9_mid_run_then_rerun_loses_nothing(tmp_path):
    n = 8
    make_inputs(tmp_path / "in", n=n)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_BATCH, str(tmp_path / "in"), str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manifest = out / MANIFEST_NAME
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.exists() and len(Manifest(manifest).load()) >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.25)                                  # now inside the third file's job
    assert proc.poll() is None, proc.stderr.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    finished = Manifest(manifest).load()
    assert 2 <= len(finished) < n
    finals = sorted(p.name for p in out.glob("img*.tif"))
    assert set(finished) <= set(finals) and len(finals) <= len(finished) + 1   # (+1: killed between rename and record)
    for name in finals:                               # no partial file under a final name
        i = int(name[3:5])
        np.testing.assert_array_equal(tifffile.imread(out / name), np.full((8, 9), 2.0 * (i + 1), np.float32))
    assert any(PARTIAL_MARK in p.name for p in out.iterdir())   # the interrupted file was left as a temporary

    summary = run_batch(double, tmp_path / "in", out, progress=False)
    assert summary.ok and sorted(summary.skipped) == sorted(finished) and len(summary.done) == n - len(finished)
    check_outputs(out, n)
    assert not any(PARTIAL_MARK in p.name for p in out.iterdir())
    assert sorted(Manifest(manifest).load()) == [f"img{i:02d}.tif" for i in range(n)]
    assert all(json.loads(line) for line in manifest.read_text().splitlines())


def cli(argv: list[str]):
    """Parse ``semiblind batch ...`` with the batch sub-command alone."""
    import argparse

    from fiji_bridge.cli.batch import register

    parser = argparse.ArgumentParser(prog="semiblind")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["batch", *argv])


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    from fiji_bridge.cli.batch import run

    code = run(cli(argv), job=double)
    return code, capsys.readouterr().err


def test_cli_runs_resumes_and_reports(tmp_path, capsys):
    make_inputs(tmp_path / "in", n=3)
    argv = [str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--workers", "1", "--quiet"]
    code, err = run_cli(argv, capsys)
    assert code == 0 and err.startswith("3 done, 0 skipped (already done), 0 failed in ")
    check_outputs(tmp_path / "out", 3)
    code, err = run_cli(argv, capsys)
    assert code == 0 and err.startswith("0 done, 3 skipped")


def test_cli_options_reach_the_job(tmp_path):
    from fiji_bridge.cli.batch import job_options

    args = cli(["in", "-o", "out", "--iterations", "7", "--tv", "0.01", "--tile", "512", "--model", "m.onnx"])
    assert job_options(args) == {"iterations": 7, "tv": 0.01, "device": "cpu", "tile": 512, "model": "m.onnx"}
    assert "tile" not in job_options(cli(["in", "-o", "out"]))
    for bad in (["--iterations", "0"], ["--tv", "0.5"], ["--tile", "x"], ["--workers", "-2"]):
        with pytest.raises(SystemExit):
            cli(["in", "-o", "out", *bad])


def test_cli_unreadable_file_fails_alone_with_exit_1(tmp_path, capsys):
    make_inputs(tmp_path / "in", n=3, bad=(1,))
    code, err = run_cli([str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--workers", "1", "--quiet"], capsys)
    assert code == 1 and err.splitlines()[0].startswith("2 done, 0 skipped (already done), 1 failed")
    assert err.splitlines()[1].startswith("  failed: img01.tif: TiffFileError")
    check_outputs(tmp_path / "out", 3, bad=(1,))


@pytest.mark.parametrize("case", ["no-match", "inside", "scheduler"])
def test_cli_bad_input_is_one_line_exit_2_and_damages_nothing(tmp_path, capsys, monkeypatch, case):
    make_inputs(tmp_path / "in", n=2)
    out = tmp_path / "in" / "sub" if case == "inside" else tmp_path / "out"
    out.mkdir(parents=True)
    (out / "img00.tif").write_bytes(b"an earlier result")
    argv = [str(tmp_path / "in"), "-o", str(out), "--quiet"]
    argv += {"no-match": ["--pattern", "*.png", "--workers", "1"], "inside": ["--workers", "1"],
             "scheduler": ["--scheduler", f"tcp://127.0.0.1:{_free_port()}"]}[case]
    monkeypatch.setattr("fiji_bridge.parallel.dask_engine.CONNECT_TIMEOUT", 1.0)
    code, err = run_cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("semiblind batch: error: ")
    assert {"no-match": "no files matching", "inside": "inside the input folder",
            "scheduler": "cannot reach the Dask scheduler"}[case] in err
    assert [p.name for p in out.iterdir()] == ["img00.tif"] and (out / "img00.tif").read_bytes() == b"an earlier result"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Scaled:
    """A job with options: the input times ``factor``."""

    def __init__(self, factor: float):
        self.options = {"factor": factor}

    def __call__(self, in_path: Path, out_path: Path) -> dict:
        tifffile.imwrite(out_path, tifffile.imread(in_path).astype(np.float32) * self.options["factor"])
        return {}


def test_changed_options_redo_finished_files(tmp_path):
    make_inputs(tmp_path / "in", n=2)
    assert len(run_batch(Scaled(2.0), tmp_path / "in", tmp_path / "out", progress=False).done) == 2
    assert len(run_batch(Scaled(2.0), tmp_path / "in", tmp_path / "out", progress=False).skipped) == 2
    assert len(run_batch(Scaled(3.0), tmp_path / "in", tmp_path / "out", progress=False).done) == 2
    assert tifffile.imread(tmp_path / "out" / "img01.tif")[0, 0] == 6.0
    assert Manifest(tmp_path / "out" / MANIFEST_NAME).load()["img01.tif"]["options"] == {"factor": 3.0}


def test_two_inputs_for_one_output_are_refused_before_any_work(tmp_path):
    make_inputs(tmp_path / "in", n=1)
    tifffile.imwrite(tmp_path / "in" / "img00.tiff", np.zeros((4, 4), np.uint16))
    with pytest.raises(BatchError, match="would both be written to img00.tif"):
        run_batch(double, tmp_path / "in", tmp_path / "out", "*.tif*", progress=False)
    assert not (tmp_path / "out").exists()


def test_python_api_equivalent_of_the_command(tmp_path):
    from fiji_bridge.parallel.batch import deconvolve_folder

    make_inputs(tmp_path / "in", n=2)
    summary = deconvolve_folder(tmp_path / "in", tmp_path / "out", workers=1, job=Scaled(2.0), progress=False)
    assert summary.done == ["img00.tif", "img01.tif"]
    check_outputs(tmp_path / "out", 2)


def test_batch_command_runs_the_real_pipeline(tmp_path, capsys):
    """`semiblind batch` end to end: PipelineJob -> pipeline.process_file on real simulated images."""
    import tifffile as tf

    from fiji_bridge.cli import main
    from fiji_bridge.simulation.simulate import simulate_quadrants
    from fiji_bridge.io.tiff import read_image as read
    src, dst = tmp_path / "raw", tmp_path / "restored"
    src.mkdir()
    cfg = simulation_config()
    for k in range(2):
        sim = simulate_quadrants(cfg, seed=k, shape=(160, 160), photons=800)
        tf.imwrite(src / f"f{k}.tif", sim.blurred.astype("uint16"), imagej=True,
                   resolution=(1 / 0.15, 1 / 0.15), metadata={"unit": "micron"})
    (src / "broken.tif").write_bytes(b"not a tiff")
    code = main(["batch", str(src), "-o", str(dst), "--workers", "1", "--iterations", "3", "--quiet"])
    assert code == 1                                            # one file failed, the others are done
    err = capsys.readouterr()
    assert "broken.tif" in err.out + err.err
    for k in range(2):
        out = read(dst / f"f{k}.tif")
        assert out.data.shape == (160, 160) and out.data.dtype == "float32" and abs(out.pixel_size - 0.15) < 1e-6
    assert not (dst / "broken.tif").exists()
    stamps = {p.name: p.stat().st_mtime_ns for p in dst.glob("f*.tif")}
    assert main(["batch", str(src), "-o", str(dst), "--workers", "1", "--iterations", "3", "--quiet"]) == 1
    assert {p.name: p.stat().st_mtime_ns for p in dst.glob("f*.tif")} == stamps   # finished files skipped
