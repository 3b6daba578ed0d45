"""``semiblind batch`` on one large stack file: planes spread over Dask workers, and peak memory.

One T x 2-channel OME-TIFF of simulated tilted specimens (uint16) is batched (a) in this process
(``--workers 1``, a fresh subprocess so its peak RSS is the run's) and (b) on an embedded cluster of 2
single-threaded workers, where the file's task hands its planes to every worker. Reported: wall time, plane
tasks per worker (Dask task stream), and peak resident memory (``ru_maxrss``) of the in-process run and of
each worker. Run for two stack lengths: the peak must not grow with the number of planes.

    OMP_NUM_THREADS=1 python benchmarks/bench_batch_stacks.py [--size 512] [--frames 4 12] [--iterations 10]

Prints JSON; ``--out FILE`` also writes it.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_stack(path: Path, frames: int, size: int) -> None:
    """A frames x 2-channel OME-TIFF (0.16 µm pixels) of simulated tilted specimens, 16-bit."""
    from fiji_bridge.estimation.model import PSFModel
    from fiji_bridge.simulation.simulate import simulate_tilted
    cfg = PSFModel().config
    planes = [simulate_tilted(cfg, seed, (size, size), 500).blurred for seed in range(2)]
    data = np.stack([np.stack(planes)] * frames)
    tifffile.imwrite(path, np.clip(data, 0, 65535).astype(np.uint16), ome=True,
                     metadata={"axes": "TCYX", "PhysicalSizeX": 0.16, "PhysicalSizeY": 0.16})


def in_process(src: Path, dst: Path, iterations: int) -> dict:
    """``semiblind batch --workers 1`` in a fresh process: wall time (s) and its peak RSS (MiB)."""
    code = ("import resource, sys, time; from fiji_bridge.cli import main; t = time.perf_counter(); "
            f"rc = main(['batch', {str(src)!r}, '-o', {str(dst)!r}, '--workers', '1', '--quiet', "
            f"'--iterations', '{iterations}', '--tv', '0']); "
            "print(rc, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    rc, seconds, peak_kib = out.stdout.split()[-3:]
    assert rc == "0", out.stderr
    return {"seconds": round(float(seconds), 2), "peak_rss_mib": round(int(peak_kib) / 1024, 1)}


def on_cluster(src: Path, dst: Path, iterations: int, workers: int = 2) -> dict:
    """The batch on an embedded cluster: wall time, plane tasks per worker, each worker's peak RSS (MiB)."""
    import distributed

    from fiji_bridge.parallel.batch import PipelineJob, run_batch
    from fiji_bridge.parallel.dask_engine import open_client
    with open_client(workers=workers) as client:
        client.wait_for_workers(workers)
        start = time.perf_counter()
        with distributed.get_task_stream(client) as stream:
            summary = run_batch(PipelineJob({"iterations": iterations, "tv": 0.0}), src, dst, client=client,
                                progress=False)
        seconds = time.perf_counter() - start
        peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    assert summary.ok, summary.report()
    kinds: Counter = Counter()
    for r in stream.data:
        key = r["key"] if isinstance(r["key"], str) else r["key"][0]
        kinds[(key.rsplit("-", 5)[0], r["worker"])] += 1
    names = sorted({w for _, w in kinds})
    return {"seconds": round(seconds, 2),
            "tasks_per_worker": {f"worker {k}": {t: n for (t, w), n in kinds.items() if w == name}
                                 for k, name in enumerate(names)},
            "worker_peak_rss_mib": [round(v / 1024, 1) for v in peaks.values()],
            "driver_peak_rss_mib_so_far": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--frames", type=int, nargs="+", default=[4, 12])
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    results = {"size": args.size, "channels": 2, "iterations": args.iterations, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for frames in args.frames:
            src = Path(tmp) / f"in{frames}"
            src.mkdir()
            make_stack(src / "stack.ome.tif", frames, args.size)
            run = {"frames": frames, "planes": 2 * frames,
                   "input_mib": round((src / "stack.ome.tif").stat().st_size / 2 ** 20, 1),
                   "workers_1": in_process(src, Path(tmp) / f"out1_{frames}", args.iterations),
                   "workers_2": on_cluster(src, Path(tmp) / f"out2_{frames}", args.iterations)}
            run["speedup"] = round(run["workers_1"]["seconds"] / run["workers_2"]["seconds"], 2)
            results["runs"].append(run)
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
