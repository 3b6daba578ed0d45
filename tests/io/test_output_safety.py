"""Output safety (issue 13, items 2, 3, 4, 6, 7 and their rows of items 10 and 11), with real processes.

- a batch pattern or output may not reach outside its folder, nor onto an input;
- written files have the mode of a plain ``open`` under the umask (022 and 002);
- outputs naming the same file (or the input) are refused before any work;
- two batches on one output folder: the second is refused as "busy", the first is not disturbed;
- SIGTERM/SIGINT leave no temporary; after SIGKILL the next run removes the stale one (a live one of
  another process is kept);
- a full disk is one line naming the file, with nothing left behind.

Every refused command: exit 2, exactly one line on stderr, no traceback, no file created, input untouched.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from fiji_bridge.simulation.simulate import simulate_quadrants, simulate_tilted
from tests.conftest import simulation_config

ROOT = Path(__file__).resolve().parents[2]
SEMIBLIND = [sys.executable, "-m", "fiji_bridge.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
FAST = ["--iterations", "2", "--quiet"]


def _save(path: Path, image: np.ndarray, pixel_size: float = 0.16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.clip(image, 0, 65535).astype(np.uint16), imagej=True,
                     resolution=(1 / pixel_size, 1 / pixel_size), metadata={"unit": "micron"})
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """Small simulated inputs: 96² (fast runs), 160² (tiled with --tile 128), 512² (long enough to signal)."""
    cfg = simulation_config()
    root = tmp_path_factory.mktemp("inputs")
    return {"small": _save(root / "small.tif", simulate_quadrants(cfg, 0, (96, 96), 800).blurred),
            "small2": _save(root / "small2.tif", simulate_tilted(cfg, 1, (96, 96), 800).blurred),
            "mid": _save(root / "mid.tif", simulate_quadrants(cfg, 2, (160, 160), 800).blurred),
            "big": _save(root / "big.tif", simulate_quadrants(cfg, 3, (512, 512), 800).blurred)}


def run(args: list, *, cwd: Path | None = None, umask: int | None = None, timeout: float = 120
        ) -> subprocess.CompletedProcess:
    """``semiblind ARGS`` in a fresh process (optionally under ``umask``)."""
    return subprocess.run([*SEMIBLIND, *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


def start(args: list) -> subprocess.Popen:
    """``semiblind ARGS`` in the background, with SIGINT/SIGTERM at their defaults (a shell may ignore them)."""
    def defaults():
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)
    return subprocess.Popen([*SEMIBLIND, *map(str, args)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=defaults)


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) -> digest of its bytes."""
    return {p.relative_to(folder).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*") if "partial" in p.name or p.name.endswith(".part"))


def assert_refused(proc: subprocess.CompletedProcess, *needles: str) -> None:
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, proc.stderr
    for needle in needles:
        assert needle in err, err


def wait_for(condition, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process ended early ({proc.returncode}): {proc.stderr.read()}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- 2. a batch never writes outside its output folder, nor onto an input ------------------------------------

def _batch_tree(tmp_path: Path, images) -> Path:
    d = tmp_path / "d"
    (d / "a").mkdir(parents=True)
    (d / "x").mkdir()
    shutil.copy(images["small"], d / "a" / "img.tif")
    shutil.copy(images["small2"], d / "x" / "precious.tif")
    return d


@pytest.mark.parametrize("pattern", ["../x/*.tif", "sub/../../x/*.tif", "{abs}/x/*.tif"])
def test_batch_pattern_reaching_outside_the_input_folder_is_refused(tmp_path, images, pattern):
    d = _batch_tree(tmp_path, images)
    before = tree(d)
    proc = run(["batch", d / "a", "-o", d / "b", "--pattern", pattern.format(abs=d), "--workers", "1", *FAST])
    assert_refused(proc, "outside the input folder")
    assert tree(d) == before and not (d / "b").exists()


def test_batch_output_through_a_link_onto_an_input_is_refused(tmp_path, images):
    d = _batch_tree(tmp_path, images)
    (d / "a" / "sub").mkdir()
    shutil.copy(images["small2"], d / "a" / "sub" / "s.tif")
    (d / "b").mkdir()
    (d / "b" / "sub").symlink_to(d / "a" / "sub")          # b/sub/s.tif would be the input a/sub/s.tif
    before = tree(d / "a")
    proc = run(["batch", d / "a", "-o", d / "b", "--pattern", "**/*.tif", "--workers", "1", *FAST])
    assert_refused(proc)
    assert tree(d / "a") == before and sorted(p.name for p in (d / "b").iterdir()) == ["sub"]


def test_batch_output_onto_an_input_of_a_nested_input_folder_is_refused(tmp_path, images):
    out = tmp_path / "b"                                    # IN_DIR = b/in inside OUT_DIR = b
    (out / "in" / "in").mkdir(parents=True)
    shutil.copy(images["small"], out / "in" / "in" / "x.tif")
    shutil.copy(images["small2"], out / "in" / "x.tif")     # b/in/in/x.tif -> b/in/x.tif, an input
    before = tree(out)
    proc = run(["batch", out / "in", "-o", out, "--pattern", "**/*.tif", "--workers", "1", *FAST])
    assert_refused(proc, "would overwrite the input file")
    assert tree(out) == before


# -- 3. ordinary permissions ------------------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_every_written_file_has_the_mode_of_a_plain_open(tmp_path, images, umask):
    out = tmp_path / "out"
    out.mkdir()
    batch_in = tmp_path / "batch_in"
    batch_in.mkdir()
    shutil.copy(images["small"], batch_in / "a.tif")
    commands = [
        ["deconvolve", images["small"], "-o", out / "restored.tif", "--map", out / "map.tif",
         "--report", out / "report.png", *FAST],
        ["deconvolve", images["mid"], "-o", out / "tiled.tif", "--tile", "128", *FAST],
        ["psf-map", images["small"], "-o", out / "psfmap.tif", "--quiet"],
        ["psf", "--na", "0.75", "--wavelength", "0.53", "--pixel-size", "0.16", "--size", "33", "-o", out / "psf.tif",
         "--quiet"],
        ["simulate", "-o", out / "sim", "--size", "96", "--quiet"],
        ["batch", batch_in, "-o", out / "batch", "--workers", "1", *FAST],
    ]
    for command in commands:
        proc = run(command, umask=umask)
        assert proc.returncode == 0, proc.stderr
    script = ("from fiji_bridge.io.atomic import write_text; import sys; write_text(sys.argv[1], '{}')")  # demo's JSON
    subprocess.run([sys.executable, "-c", script, out / "summary.json"], env=ENV, check=True,
                   preexec_fn=lambda: os.umask(umask))
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) == 15 and not partials(out)
    modes = {p.relative_to(out).as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes


def test_replacing_a_file_keeps_its_mode_like_open(tmp_path, images):
    out = tmp_path / "restored.tif"
    out.write_bytes(b"old")
    out.chmod(0o640)
    assert run(["deconvolve", images["small"], "-o", out, *FAST], umask=0o022).returncode == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o640 and tifffile.imread(out).shape == (96, 96)


# -- 4. two outputs naming one file, or the input ----------------------------------------------------------

@pytest.mark.parametrize("case", ["report", "map", "all three", "map is the input", "hard link to the input",
                                  "output is a folder", "dot path"])
def test_outputs_naming_the_same_file_are_refused_before_any_work(tmp_path, images, case):
    src = shutil.copy(images["small"], tmp_path / "in.tif")
    out = tmp_path / "same.tif"
    out.write_bytes(b"an earlier result")
    extra = {"report": ["--report", out], "map": ["--map", out], "all three": ["--map", out, "--report", out],
             "map is the input": ["--map", tmp_path / "." / "in.tif"],
             "dot path": ["--map", tmp_path / "." / "same.tif"],
             "hard link to the input": [], "output is a folder": []}[case]
    if case == "hard link to the input":
        out.unlink()
        os.link(src, out)
    if case == "output is a folder":
        out.unlink()
        out.mkdir()
    before = tree(tmp_path)
    proc = run(["deconvolve", src, "-o", out, *extra, *FAST])
    assert_refused(proc, {"output is a folder": "is a folder", "map is the input": "overwrite the input",
                          "hard link to the input": "overwrite the input"}.get(case, "give each output its own name"))
    assert tree(tmp_path) == before


# -- 6. concurrent batches on one output folder --------------------------------------------------------------

def test_second_concurrent_batch_is_refused_as_busy_and_the_first_is_undisturbed(tmp_path, images):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for k in range(2):
        shutil.copy(images["big"], src / f"f{k}.tif")
    args = ["batch", src, "-o", out, "--workers", "1", "--tile", "128", "--iterations", "4", "--quiet"]
    first = start(args)
    wait_for(lambda: out.is_dir() and bool(partials(out)), proc=first)      # first is writing f0
    second = run(args)
    assert_refused(second, "busy", f"pid {first.pid}")
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0 and err.startswith("2 done, 0 skipped"), err
    for k in range(2):
        assert tifffile.imread(out / f"f{k}.tif").shape == (512, 512)
    # no lock file, no temporary
    assert sorted(p.name for p in out.iterdir()) == ["f0.tif", "f1.tif", "semiblind-manifest.jsonl"]
    third = run(args)                                      # free again: everything already done
    assert third.returncode == 0 and third.stderr.startswith("0 done, 2 skipped"), third.stderr


# -- 7. signals ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_tiled_deconvolve_leaves_no_temporary(tmp_path, images, signum, code):
    out = tmp_path / "out"
    out.mkdir()
    proc = start(["deconvolve", images["big"], "-o", out / "OUT.tif", "--tile", "128", "--iterations", "400",
                  "--quiet"])
    wait_for(lambda: bool(partials(out)), proc=proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert list(out.iterdir()) == []


def test_signal_during_batch_leaves_no_temporary_and_no_lock(tmp_path, images):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(images["big"], src / "f.tif")
    proc = start(["batch", src, "-o", out, "--workers", "1", "--tile", "128", "--iterations", "400", "--quiet"])
    wait_for(lambda: out.is_dir() and bool(partials(out)), proc=proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert [p.name for p in out.iterdir()] == []


def test_after_kill_9_the_next_run_removes_stale_temporaries_only(tmp_path, images):
    from fiji_bridge.io.atomic import atomic_path
    out = tmp_path / "out"
    out.mkdir()
    (out / ".notes.tif.keep").write_text("not ours")         # other hidden files are left alone
    with atomic_path(out / "live.tif") as live:              # a live temporary of another process (this one)
        live.write_bytes(b"being written")
        proc = start(["deconvolve", images["big"], "-o", out / "OUT.tif", "--tile", "128", "--iterations", "400",
                      "--quiet"])
        wait_for(lambda: len(partials(out)) == 2, proc=proc)
        proc.kill()
        proc.wait()
        assert len(partials(out)) == 2, "kill -9 should have left its temporary"
        proc = run(["deconvolve", images["small"], "-o", out / "small.tif", *FAST])
        assert proc.returncode == 0, proc.stderr
        assert sorted(p.name for p in out.iterdir()) == sorted([".notes.tif.keep", "small.tif", live.name])
    assert sorted(p.name for p in out.iterdir()) == [".notes.tif.keep", "live.tif", "small.tif"]


# -- 10. messages: full disk, a folder as input, a bad scheduler, default pattern ---------------------------

FILL_AND_RUN = textwrap.dedent("""
    import json, os, subprocess, sys
    full, cases = sys.argv[1], json.loads(sys.argv[2])
    results = []
    for free_kb, args in cases:
        for p in os.listdir(full):
            os.unlink(os.path.join(full, p))
        if free_kb is not None:                          # fill the disk, then free free_kb
            fd = os.open(os.path.join(full, "fill"), os.O_WRONLY | os.O_CREAT)
            try:
                while True:
                    os.write(fd, b"0" * 4096)
            except OSError:
                pass
            os.ftruncate(fd, max(0, os.fstat(fd).st_size - free_kb * 1024))
            os.close(fd)
        proc = subprocess.run([sys.executable, "-m", "fiji_bridge.cli", *args], capture_output=True, text=True)
        results.append([proc.returncode, proc.stderr, sorted(p for p in os.listdir(full) if p != "fill")])
    print(json.dumps(results))
""")


def test_full_disk_is_one_line_and_leaves_nothing(tmp_path, images):
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs unshare and mount for a small tmpfs")
    full = tmp_path / "full"
    full.mkdir()
    cases = [
        (None, ["deconvolve", str(images["big"]), "-o", f"{full}/out.tif", *FAST]),                  # short write
        (None, ["deconvolve", str(images["big"]), "-o", f"{full}/out.tif", "--tile", "128", *FAST]),  # memory map
        (80, ["deconvolve", str(images["small"]), "-o", f"{full}/o.tif", "--report", f"{full}/r.png", *FAST]),
        (4, ["psf", "--na", "0.75", "--wavelength", "0.53", "--pixel-size", "0.16", "-o", f"{full}/psf.tif"]),
    ]
    script = (f"mount -t tmpfs -o size=600k tmpfs {full} || exit 77; "
              f'exec "{sys.executable}" -c "$0" {full} "$1"')
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, FILL_AND_RUN, json.dumps(cases)], env=ENV,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and not proc.stdout.strip():
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()[:200]}")
    results = json.loads(proc.stdout)
    expected = ["out.tif", "out.tif", "r.png", "psf.tif"]
    for (code, err, left), name in zip(results, expected):
        assert code == 2 and err.strip() == f"semiblind: error: no space left on device writing {full}/{name}", err
        assert left == [], left


def test_folder_as_input_is_named_as_such(tmp_path):
    proc = run(["deconvolve", tmp_path, "-o", tmp_path / "o.tif", *FAST])
    assert_refused(proc, "is a folder, not an image file")
    assert list(tmp_path.iterdir()) == []


def test_bad_scheduler_address_fails_fast_in_one_line(tmp_path, images):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(images["small"], src / "a.tif")
    t0 = time.monotonic()
    proc = run(["batch", src, "-o", tmp_path / "out", "--scheduler", "notanaddress", *FAST], timeout=60)
    assert_refused(proc, "not a Dask scheduler address")
    assert time.monotonic() - t0 < 8 and not (tmp_path / "out").exists()


def test_batch_default_pattern_takes_every_tiff_and_records_final_outputs(tmp_path, images):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in ("a.tif", "b.TIF", "c.tiff"):
        shutil.copy(images["small"], src / name)
    (src / "notes.txt").write_text("not an image")
    proc = run(["batch", src, "-o", out, "--workers", "1", *FAST])
    assert proc.returncode == 0 and proc.stderr.startswith("3 done"), proc.stderr
    assert sorted(p.name for p in out.glob("*.tif")) == ["a.tif", "b.tif", "c.tif"]
    records = [json.loads(line) for line in (out / "semiblind-manifest.jsonl").read_text().splitlines()]
    # 11: the manifest names the final output, not the temporary it was written under
    assert sorted(Path(r["info"]["outputs"][0]).name for r in records) == ["a.tif", "b.tif", "c.tif"]
    assert all(Path(r["info"]["outputs"][0]).is_file() for r in records)
