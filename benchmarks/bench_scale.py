"""Scale benchmark (issue 6): batch throughput, tiling overhead, peak memory of out-of-core tiling.

Prints one JSON document:

- ``batch``: megapixels/s of TV-RL over a batch of N x N images, in one process and on an embedded
  local Dask cluster of 2 worker processes (target: >= 1.6x on 2 cores);
- ``tiling``: untiled vs tiled time on one large image with the PSF grid the pipeline uses
  (target: tiled <= 1.15 x untiled), and the largest tiled/untiled difference;
- ``rss``: peak resident memory of the whole file job of ``semiblind deconvolve`` (`process_file`:
  band-wise CNN map with the bundled model, then `deconvolve_tiff` tile by tile) on uint16 TIFFs of
  several sizes, each in a fresh subprocess (``VmHWM``), to show that it is bounded by the tile size,
  not the image size.

The work is the deconvolution core (spatially-variant TV-RL with a fixed PSF grid of the bundled
model's size, 41 px, on 128-px cells as `fiji_bridge.estimation.psf_map.default_grid`); the CNN
map, a small share of the time, is left out so that the numbers do not depend on the model.

Usage: ``python benchmarks/bench_scale.py [--quick] [--output FILE]``
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fiji_bridge import Optics, convolve_sv, psf_batch, richardson_lucy  # noqa: E402
from fiji_bridge.parallel.batch import run_batch  # noqa: E402
from fiji_bridge.parallel.dask_engine import open_client  # noqa: E402
from fiji_bridge.estimation.psf_map import default_grid  # noqa: E402
from fiji_bridge.restoration.tiling import DEFAULT_TILE, deconvolve_tiled, default_overlap  # noqa: E402

PSF_SIZE = 41
OPTICS = Optics(na=0.75, wavelength=0.53, pixel_size=0.16)


def psf_grid(shape: tuple[int, int]) -> np.ndarray:
    """The pipeline's default PSF grid for ``shape``: defocus rising across the field, (gy, gx, 41, 41)."""
    gy, gx = default_grid(shape)
    defocus = np.linspace(0.0, 0.35, gy * gx)[:, None]
    return psf_batch(OPTICS, ["defocus"], defocus, PSF_SIZE).reshape(gy, gx, PSF_SIZE, PSF_SIZE)


def specimen(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Poisson-noisy beads and stripes, uint16."""
    rng = np.random.default_rng(seed)
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    img = 50.0 + 100.0 * (np.sin(xx / 13.0 + yy / 29.0) > 0.5)
    img = np.broadcast_to(img, shape).copy()
    idx = rng.integers(0, shape, (shape[0] * shape[1] // 400, 2))
    img[idx[:, 0], idx[:, 1]] += rng.uniform(200, 2000, len(idx))
    return rng.poisson(img).astype(np.uint16)


@dataclass(frozen=True)
class RLJob:
    """Batch job: TV-RL of one TIFF with a fixed PSF grid (picklable: runs on Dask workers)."""

    psfs: np.ndarray
    iterations: int

    def __call__(self, in_path: Path, out_path: Path) -> dict:
        image = tifffile.imread(in_path).astype(np.float32)
        tifffile.imwrite(out_path, richardson_lucy(image, self.psfs, self.iterations))
        return {}


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads) in s."""
    import psutil

    times = psutil.Process().cpu_times()
    return times.user + times.system


def bench_batch(count: int, size: int, iterations: int, workers: int) -> dict:
    """Megapixels/s over ``count`` images of ``size``², single process vs local cluster."""
    psfs = psf_grid((size, size))
    megapixels = count * size * size / 1e6
    with tempfile.TemporaryDirectory(prefix="semiblind-bench-") as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for i in range(count):
            tifffile.imwrite(src / f"img{i:03d}.tif", specimen((size, size), i))
        job = RLJob(psfs, iterations)
        cpu = cpu_seconds()
        start = time.perf_counter()
        single = run_batch(job, src, Path(tmp) / "single", progress=False)
        t_single = time.perf_counter() - start
        cpu_single = cpu_seconds() - cpu
        # the same process limited to one thread (what each cluster worker gets)
        os.environ["SEMIBLIND_THREADS"] = "1"
        try:
            start = time.perf_counter()
            run_batch(job, src, Path(tmp) / "single1", progress=False)
            t_single1 = time.perf_counter() - start
        finally:
            del os.environ["SEMIBLIND_THREADS"]
        t_independent = independent_processes(src, Path(tmp) / "independent", size, iterations, workers)
        start = time.perf_counter()
        with open_client(workers=workers) as client:
            t_ready = time.perf_counter() - start
            cpu = sum(client.run(cpu_seconds).values())
            start_work = time.perf_counter()
            cluster = run_batch(job, src, Path(tmp) / "cluster", client=client, progress=False)
            t_cluster = time.perf_counter() - start_work
            cpu_cluster = sum(client.run(cpu_seconds).values()) - cpu
        identical = all(np.array_equal(tifffile.imread(Path(tmp) / "single" / n),
                                       tifffile.imread(Path(tmp) / "cluster" / n)) for n in single.done)
    assert single.ok and cluster.ok and len(cluster.done) == count
    return {"images": count, "size_px": size, "iterations": iterations, "psf_grid": list(psfs.shape[:2]),
            "single_process": {"seconds": round(t_single, 2), "mp_per_s": round(megapixels / t_single, 3),
                               "cpu_seconds": round(cpu_single, 2)},
            "single_process_1_thread": {"seconds": round(t_single1, 2), "mp_per_s": round(megapixels / t_single1, 3)},
            f"{workers}_independent_processes_1_thread": {
                "seconds": round(t_independent, 2), "mp_per_s": round(megapixels / t_independent, 3),
                "note": "no Dask: each process runs its share of the files; the hardware's ceiling for the cluster"},
            f"local_cluster_{workers}_workers": {
                "seconds": round(t_cluster, 2), "cluster_start_seconds": round(t_ready, 2),
                "worker_cpu_seconds": round(cpu_cluster, 2),
                "mp_per_s": round(megapixels / t_cluster, 3),
                "mp_per_s_including_start": round(megapixels / (t_cluster + t_ready), 3)},
            "speedup": round(t_single / t_cluster, 3), "speedup_vs_1_thread": round(t_single1 / t_cluster, 3),
            "independent_processes_speedup": round(t_single / t_independent, 3), "outputs_identical": identical}


INDEPENDENT_CHILD = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from benchmarks.bench_scale import RLJob, psf_grid
from fiji_bridge.parallel.batch import run_batch
src, dst, size, iterations = Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
job = RLJob(psf_grid((size, size)), iterations)
start = time.time()
assert run_batch(job, src, dst, progress=False).ok
print(start, time.time())
"""


def independent_processes(src: Path, dst: Path, size: int, iterations: int, n: int) -> float:
    """Seconds for ``n`` plain processes (one thread each, no Dask) splitting the files of ``src``, from the
    first process starting its work to the last one finishing (imports not counted, as for the cluster)."""
    files = sorted(src.glob("*.tif"))
    shares = []
    for k in range(n):
        share = dst / f"in{k}"
        share.mkdir(parents=True)
        for f in files[k::n]:
            (share / f.name).symlink_to(f)
        shares.append(share)
    env = {**os.environ, "SEMIBLIND_THREADS": "1", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", INDEPENDENT_CHILD, str(ROOT), str(s), str(dst / f"out{k}"),
                               str(size), str(iterations)], env=env, stdout=subprocess.PIPE, text=True)
             for k, s in enumerate(shares)]
    spans = [p.communicate()[0].split() for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError("an independent benchmark process failed")
    return max(float(s[1]) for s in spans) - min(float(s[0]) for s in spans)


def bench_tiling(size: int, iterations: int, workers: int, tile: int) -> dict:
    """Untiled vs tiled (single process and local cluster) on one simulated ``size``² image."""
    psfs = psf_grid((size, size))
    rng = np.random.default_rng(99)          # simulated: specimen blurred by the PSF field, Poisson noise
    image = rng.poisson(np.maximum(convolve_sv(specimen((size, size), 99).astype(np.float32), psfs), 0))
    image = image.astype(np.float32)
    start = time.perf_counter()
    untiled = richardson_lucy(image, psfs, iterations)
    t_untiled = time.perf_counter() - start
    start = time.perf_counter()
    tiled = deconvolve_tiled(image, psfs, tile=tile, iterations=iterations)
    t_tiled = time.perf_counter() - start
    with open_client(workers=workers) as client:
        start = time.perf_counter()
        tiled_cluster = deconvolve_tiled(image, psfs, tile=tile, iterations=iterations, client=client)
        t_cluster = time.perf_counter() - start
    return {"size_px": size, "iterations": iterations, "psf_grid": list(psfs.shape[:2]), "tile_px": tile,
            "overlap_px": default_overlap(PSF_SIZE), "untiled_s": round(t_untiled, 2),
            "tiled_s": round(t_tiled, 2), "tiling_overhead": round(t_tiled / t_untiled - 1, 3),
            f"tiled_local_cluster_{workers}_workers_s": round(t_cluster, 2),
            "max_abs_diff_over_range": float(np.abs(tiled - untiled).max() / np.ptp(untiled)),
            "cluster_identical_to_single_process": bool(np.array_equal(tiled, tiled_cluster))}


RSS_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from benchmarks.bench_scale import peak_rss_kib
from fiji_bridge.pipeline import process_file
src, dst, tile, iterations = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
baseline = peak_rss_kib()
start = time.perf_counter()
done = process_file(src, dst, map_path=dst + ".map.tif", iterations=iterations, tile=tile)
print(json.dumps({"seconds": time.perf_counter() - start, "baseline_kib": baseline, "peak_kib": peak_rss_kib(),
                  "psf_grid": done["psf_grid"], "tiled": done["tiled"]}))
"""


def peak_rss_kib() -> int:
    """Peak resident set size of this process in KiB.

    ``VmHWM`` from /proc (reset by exec, unlike ``getrusage``'s ``ru_maxrss``, which a child started
    by fork + exec inherits from a large parent); ``ru_maxrss`` where /proc is missing.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def write_large_tiff(path: Path, size: int) -> None:
    """A ``size``² uint16 TIFF written band by band (never whole in memory)."""
    out = tifffile.memmap(path, shape=(size, size), dtype=np.uint16)
    band = 1024
    for row in range(0, size, band):
        out[row:row + band] = specimen((min(band, size - row), size), row)
    out.flush()
    del out


def bench_rss(sizes: list[int], tile: int, iterations: int) -> list[dict]:
    """Peak RSS of `process_file` on a lazy input (fresh subprocess per size)."""
    results = []
    with tempfile.TemporaryDirectory(prefix="semiblind-rss-") as tmp:
        for size in sizes:
            src, dst = Path(tmp) / f"in{size}.tif", Path(tmp) / f"out{size}.tif"
            write_large_tiff(src, size)
            proc = subprocess.run([sys.executable, "-c", RSS_CHILD, str(ROOT), str(src), str(dst), str(tile),
                                   str(iterations)], capture_output=True, text=True, check=True)
            child = json.loads(proc.stdout.strip().splitlines()[-1])
            with tifffile.TiffFile(dst) as tif:
                assert tif.pages[0].shape == (size, size)
            results.append({"size_px": size, "tile_px": tile, "iterations": iterations,
                            "psf_grid": child["psf_grid"], "tiled": child["tiled"],
                            "input_mib": round(src.stat().st_size / 2**20, 1),
                            "output_mib": round(dst.stat().st_size / 2**20, 1),
                            "peak_rss_mib": round(child["peak_kib"] / 1024, 1),
                            "rss_after_imports_mib": round(child["baseline_kib"] / 1024, 1),
                            "seconds": round(child["seconds"], 1)})
            for p in (src, dst, Path(f"{dst}.map.tif")):
                p.unlink()
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes and fewer iterations")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], choices=["batch", "tiling", "rss"])
    ap.add_argument("--output", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    quick = args.quick
    report: dict = {"quick": quick, "host": platform.node(), "cpus": os.cpu_count(),
                    "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
                    "python": platform.python_version()}
    if "rss" not in args.skip:
        report["rss"] = bench_rss([4096, 16384] if quick else [4096, 8192, 16384], DEFAULT_TILE, 1)
    if "batch" not in args.skip:
        report["batch"] = bench_batch(8 if quick else 16, 512 if quick else 1024, 10 if quick else 30, args.workers)
    if "tiling" not in args.skip:
        report["tiling"] = bench_tiling(2048 if quick else 4096, 10 if quick else 30, args.workers, DEFAULT_TILE)
    report["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
