"""ImageJ bridge speed: ImagePlus -> NumPy -> ImagePlus round trips (2048², float32 and uint16) and the
overhead of running the pipeline through the bridge (ImagePlus in, result ImagePlus objects out, ImageJ
progress bar) instead of calling `fiji_bridge.deconvolve` on a NumPy array. Prints JSON.

    python benchmarks/bench_imagej.py [--quick] [--size 512] [--iterations 30]

Needs ImageJ 1 (libij-java) and a JDK; the JVM is started headless.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def timed(fn, repeat: int) -> float:
    """Median seconds of ``repeat`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def round_trip(dtype, size: int, repeat: int) -> dict:
    from fiji_bridge import imagej as ijconv
    rng = np.random.default_rng(0)
    a = (rng.random((size, size)) * 4000).astype(dtype)
    imp = ijconv.numpy_to_imageplus(a, "bench")
    to_ij = timed(lambda: ijconv.numpy_to_imageplus(a, "bench"), repeat)
    to_np = timed(lambda: ijconv.imageplus_to_numpy(imp), repeat)
    assert np.array_equal(ijconv.imageplus_to_numpy(imp), a)
    return {"numpy_to_imageplus_s": round(to_ij, 5), "imageplus_to_numpy_s": round(to_np, 5),
            "round_trip_s": round(to_ij + to_np, 5),
            "throughput_MB_s": round(2 * a.nbytes / (to_ij + to_np) / 1e6, 1)}


def test_image(size: int) -> np.ndarray:
    from scipy.signal import fftconvolve

    from fiji_bridge import default_optics, zernike_psf
    from fiji_bridge.simulation.specimens import mixture
    rng = np.random.default_rng(1)
    psf = zernike_psf(default_optics(), {4: 0.15, 6: 0.05}, size=41)
    clean = fftconvolve(mixture((size, size), rng), psf, mode="same") * 500 + 25
    return rng.poisson(np.clip(clean, 0, None)).astype(np.uint16)


def overhead(size: int, iterations: int, repeat: int) -> dict:
    """Bridge (run_command on an ImagePlus, ImageJ progress) vs. deconvolve() on the array, same parameters."""
    from fiji_bridge import deconvolve, default_optics
    from fiji_bridge.imagej import command as fiji_command
    from fiji_bridge import imagej as ijconv
    image = test_image(size)
    imp = ijconv.numpy_to_imageplus(image, "bench.tif", pixel_size=default_optics().pixel_size)
    optics = default_optics(default_optics().pixel_size)
    params = {"iterations": str(iterations), "tv": "0.002"}
    direct, bridge = [], []
    run_direct = lambda: deconvolve(image.astype(np.float32), iterations=iterations, tv=0.002,  # noqa: E731
                                    optics=optics)
    run_bridge = lambda: fiji_command.run_command(imp, params)  # noqa: E731
    run_direct(), run_bridge()                                    # warm-up (model load, FFT plans)
    for _ in range(repeat):                                       # interleaved: same machine load for both
        t = time.perf_counter()
        run_direct()
        direct.append(time.perf_counter() - t)
        t = time.perf_counter()
        run_bridge()
        bridge.append(time.perf_counter() - t)
    # the bridge's own work, timed alone: conversion in, result ImagePlus objects out, progress calls
    result = run_direct()
    from fiji_bridge.imagej.command import CommandParameters, image_plane, imagej_progress, resolve_optics
    report = imagej_progress()
    parsed = CommandParameters.parse(params)
    own = timed(lambda: (image_plane(imp), resolve_optics(parsed, ijconv.pixel_size_um(imp)),
                         ijconv.restored_to_imageplus(result.image, imp),
                         ijconv.parameter_map_to_imageplus(result.psf_map, "m"),
                         ijconv.depth_map_to_imageplus(result.psf_map, "d"),
                         [report(i / iterations, "x") for i in range(iterations + 2)]), 5)
    d, b = min(direct), min(bridge)          # best of the repeats: least disturbed by other load
    return {"image": [size, size], "iterations": iterations, "repeats": repeat,
            "direct_s": round(d, 4), "bridge_s": round(b, 4),
            "direct_median_s": round(statistics.median(direct), 4),
            "bridge_median_s": round(statistics.median(bridge), 4),
            "overhead_measured_s": round(b - d, 4), "overhead_measured_pct": round(100 * (b - d) / d, 2),
            "bridge_own_work_s": round(own, 5), "bridge_own_work_pct": round(100 * own / d, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, smaller deconvolution")
    ap.add_argument("--size", type=int, default=None, help="side of the deconvolved image (default 512)")
    ap.add_argument("--iterations", type=int, default=30)
    args = ap.parse_args()
    from fiji_bridge.imagej import command as fiji_command
    from fiji_bridge import imagej as ijconv
    t = time.perf_counter()
    fiji_command.install()
    jvm_start = time.perf_counter() - t
    rep = 3 if args.quick else 10
    size = args.size or (256 if args.quick else 512)
    out = {
        "jvm_start_and_register_s": round(jvm_start, 3),
        "imagej_version": str(ijconv.jclass("ij.IJ").getVersion()),
        "round_trip_2048_float32": round_trip(np.float32, 2048, rep),
        "round_trip_2048_uint16": round_trip(np.uint16, 2048, rep),
        "bridge_overhead": overhead(size, args.iterations, 2 if args.quick else 5),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
