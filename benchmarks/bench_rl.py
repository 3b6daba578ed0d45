"""Richardson–Lucy speed: our SI and SV RL vs skimage's SI RL, measured in the same run. Prints JSON.

    python benchmarks/bench_rl.py [--quick] [--device cpu|gpu]

Ratios (ours / skimage) are what to compare across machines; absolute seconds depend on the load.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from fiji_bridge.restoration.backend import resolve_device
from fiji_bridge.optics import Optics
from fiji_bridge.optics.psf import psf_batch
from fiji_bridge.restoration.richardson_lucy import richardson_lucy

OPTICS = Optics(na=0.75, wavelength=0.53, pixel_size=0.16)


def _grid(g: int, size: int, rng) -> np.ndarray:
    return psf_batch(OPTICS, [4, 5, 6], rng.uniform(-0.2, 0.2, (g * g, 3)) + [0.2, 0, 0], size).reshape(g, g, size, size)


def per_iteration(fn, iterations: int, sync=lambda: None, repeats: int = 3) -> float:
    """Seconds per iteration from the difference of a short and a long run (removes set-up cost);
    each run is the minimum of ``repeats`` (robust to a noisy machine)."""
    fn(1)  # warm-up (FFT plans, allocations)
    sync()
    times = []
    for n in (1, 1 + iterations):
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            fn(n)
            sync()
            best = min(best, time.perf_counter() - t)
        times.append(best)
    return max(times[1] - times[0], 1e-9) / iterations


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer iterations and sizes")
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    args = ap.parse_args()
    xp = resolve_device(args.device)
    sync = (lambda: xp.cuda.Stream.null.synchronize()) if xp is not np else (lambda: None)
    rng = np.random.default_rng(0)
    its = 3 if args.quick else 8
    n, psf_size = 1024, 63                      # 63: odd PSF of the requested 64² size
    image = xp.asarray(rng.poisson(100, (n, n)).astype(np.float32))
    psf = _grid(1, psf_size, rng)[0, 0]

    from skimage.restoration import richardson_lucy as sk_rl
    host = np.asarray(image.get() if xp is not np else image)
    results: dict = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                     "device": args.device, "image": [n, n], "psf": [psf_size, psf_size], "iterations_timed": its}
    sk = per_iteration(lambda k: sk_rl(host, psf, num_iter=k, clip=False), its)
    results["skimage_si_s_per_it"] = sk
    for name, grid in (("ours_si", psf), ("ours_sv_4x4", _grid(4, psf_size, rng)), ("ours_sv_8x8", _grid(8, psf_size, rng))):
        g = xp.asarray(grid)
        t = per_iteration(lambda k: richardson_lucy(image, g, iterations=k, tv=0.002), its, sync)
        results[f"{name}_s_per_it"] = t
        results[f"{name}_over_skimage_si"] = t / sk
    scaling = {}
    for size in ((512, 1024) if args.quick else (512, 1024, 2048, 4096)):
        img = xp.asarray(rng.poisson(100, (size, size)).astype(np.float32))
        g = xp.asarray(_grid(4, psf_size, rng))
        scaling[str(size)] = per_iteration(lambda k: richardson_lucy(img, g, iterations=k, tv=0.002), max(2, its // 2), sync)
    results["sv_4x4_s_per_it_by_size"] = scaling
    sizes = sorted(int(s) for s in scaling)
    results["sv_4x4_growth_exponent"] = float(np.polyfit(np.log([s * s for s in sizes]),
                                                         np.log([scaling[str(s)] for s in sizes]), 1)[0])
    results["targets"] = {"sv_4x4_over_skimage_si": 0.5, "si_over_skimage_si": 0.25, "growth_exponent": "~1"}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
