"""Dask engine on a real cluster: a scheduler and two worker processes started here on 127.0.0.1."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

distributed = pytest.importorskip("distributed")

from fiji_bridge import Optics, convolve_sv, psf_batch, richardson_lucy  # noqa: E402
from fiji_bridge.parallel.batch import MANIFEST_NAME, Manifest, run_batch  # noqa: E402
from fiji_bridge.parallel.dask_engine import (EngineError, ModelPreload, cached_model, connect, map_ordered,  # noqa: E402
                                     model_load_counts, open_client)
from fiji_bridge.restoration.tiling import deconvolve_tiled  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PSF = 15


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """A scheduler and two single-threaded worker processes, as separate programs."""
    folder = tmp_path_factory.mktemp("cluster")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    cli = [sys.executable, "-m"]
    procs = [subprocess.Popen(cli + ["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
                                     "--no-dashboard"], env=env, cwd=folder,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    address = f"tcp://127.0.0.1:{port}"
    for _ in range(2):
        procs.append(subprocess.Popen(cli + ["distributed.cli.dask_worker", address, "--nthreads", "1",
                                             "--no-dashboard", "--host", "127.0.0.1", "--memory-limit", "0"],
                                      env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                c = connect(address, timeout=5)
                break
            except EngineError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        c.wait_for_workers(2, timeout=60)
        yield c
        c.shutdown()                                   # scheduler and workers exit
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(3)
    optics = Optics(na=0.8, wavelength=0.52, pixel_size=0.1)
    psfs = psf_batch(optics, ["defocus"], np.linspace(0, 0.4, 6)[:, None], PSF).reshape(2, 3, PSF, PSF)
    obj = np.zeros((150, 190), np.float32)
    idx = rng.integers(0, obj.shape, (150, 2))
    obj[idx[:, 0], idx[:, 1]] = rng.uniform(100, 1000, 150)
    return rng.poisson(convolve_sv(obj, psfs) + 5).astype(np.float32), psfs


def test_cluster_has_two_worker_processes(client):
    pids = client.run(os.getpid)
    assert len(pids) == 2 and len(set(pids.values())) == 2 and os.getpid() not in pids.values()


def test_tiled_image_on_the_cluster_is_identical_to_single_process(client, scene):
    blurred, psfs = scene
    local = deconvolve_tiled(blurred, psfs, tile=80, overlap=32, iterations=4)
    remote = deconvolve_tiled(blurred, psfs, tile=80, overlap=32, iterations=4, client=client)
    # identical up to float32 rounding: FFTW may measure another plan in a worker (see below)
    np.testing.assert_allclose(remote, local, rtol=1e-5, atol=1e-6 * float(np.abs(local).max()))
    assert np.abs(local - richardson_lucy(blurred, psfs, 4)).max() > 0     # really tiled (6 tiles)


def deconvolve_job(in_path: Path, out_path: Path) -> dict:
    """A real job: TV-RL with a fixed PSF; fails on unreadable files."""
    data = tifffile.imread(in_path).astype(np.float32)
    psf = psf_batch(Optics(na=0.8, wavelength=0.52, pixel_size=0.1), ["defocus"], np.array([[0.3]]), PSF)[0]
    tifffile.imwrite(out_path, richardson_lucy(data, psf, iterations=3))
    return {"pid": os.getpid()}


def test_batch_on_the_cluster_is_identical_to_single_process(client, scene, tmp_path):
    blurred, _ = scene
    (tmp_path / "in").mkdir()
    for i in range(5):
        tifffile.imwrite(tmp_path / "in" / f"f{i}.tif", (blurred[: 60 + 10 * i] + i).astype(np.uint16))
    (tmp_path / "in" / "f9.tif").write_bytes(b"broken")
    local = run_batch(deconvolve_job, tmp_path / "in", tmp_path / "local", progress=False)
    remote = run_batch(deconvolve_job, tmp_path / "in", tmp_path / "remote", client=client, progress=False)
    assert sorted(remote.done) == sorted(local.done) == [f"f{i}.tif" for i in range(5)]
    assert [n for n, _ in remote.failed] == [n for n, _ in local.failed] == ["f9.tif"]
    for name in local.done:
        # the same computation; FFTW measures its plans per process (FFTW_MEASURE) and may pick another
        # algorithm in a worker under load, which changes float32 rounding, not the result
        here = tifffile.imread(tmp_path / "local" / name)
        np.testing.assert_allclose(tifffile.imread(tmp_path / "remote" / name), here, rtol=1e-5,
                                   atol=1e-6 * float(np.abs(here).max()))
    pids = {r["info"]["pid"] for r in Manifest(tmp_path / "remote" / MANIFEST_NAME).load().values() if "info" in r}
    assert os.getpid() not in pids and pids <= set(client.run(os.getpid).values())


def fake_loader(path: str, device: str) -> dict:
    """Stands in for PSFModel: returns the file's bytes."""
    return {"weights": Path(path).read_bytes(), "device": device}


def use_model(path: str) -> tuple[int, int]:
    model = cached_model(path, fake_loader)
    assert model["weights"] == b"onnx"
    time.sleep(0.05)
    return os.getpid(), model_load_counts()[str(Path(path).resolve())]


def test_workers_load_the_model_once_each(client, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx")
    client.register_plugin(ModelPreload(path, fake_loader))
    results = client.gather([client.submit(use_model, str(path), pure=False) for _ in range(12)])
    assert {count for _, count in results} == {1}                         # 12 tasks, one load per worker
    counts = client.run(model_load_counts)
    assert [c[str(path.resolve())] for c in counts.values()] == [1, 1]    # both workers, preloaded once


def slow_square(x: int) -> int:
    time.sleep(0.02 * (5 - x))
    return x * x


def test_map_ordered_keeps_submission_order_on_the_cluster(client):
    assert list(map_ordered(slow_square, [(i,) for i in range(6)], client=client, max_in_flight=3)) == \
        [i * i for i in range(6)]
    assert list(map_ordered(slow_square, [(i,) for i in range(3)])) == [0, 1, 4]


def test_unreachable_scheduler_is_a_one_line_error():
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(EngineError, match=f"cannot reach the Dask scheduler at {address}") as info:
        with open_client(address, timeout=2):
            pass
    assert "\n" not in str(info.value)


def test_embedded_local_cluster(tmp_path):
    with open_client(workers=1) as c:
        threads = c.nthreads()
        assert list(threads.values()) == [1] and all(a.startswith("tcp://127.0.0.1") for a in threads)
        assert c.submit(slow_square, 3).result() == 9


def test_cached_model_loads_the_bundled_psf_model_once():
    from fiji_bridge.estimation.model import PSFModel, default_model_path

    if not default_model_path().is_file():
        pytest.skip("no bundled model in this checkout")
    first, second = cached_model(), cached_model(default_model_path())
    assert isinstance(first, PSFModel) and first is second
    assert model_load_counts()[str(default_model_path().resolve())] == 1
