"""Richardson–Lucy speed and memory against the FFT floor (issue 15). Prints JSON; ``--output`` writes it.

    python benchmarks/bench_rl.py [--quick] [--device cpu|gpu] [--sizes 1024 2048] [--file-size N] [--output FILE]

Per RL iteration, every method is timed in trials interleaved with its baselines: in each trial
skimage's RL runs right before and right after the method, and so does the **FFT floor** (plain RL
with a precomputed PSF spectrum: 4 real FFTs per iteration at an even 5-smooth size, ``scipy.fft``,
1 thread, in-place arithmetic). Ratios are per trial, the reported value is their median (>= 3
trials): ratios, not seconds, are what to compare on a loaded machine. Each method is timed by the
difference of a 1-iteration and a (1 + n)-iteration run (removes set-up cost). Speed runs use explicit
settings (30 iterations, tv 0.002 for the whole-run numbers; tv 0.002 per iteration), since the
default iterations/tv are chosen from each image's noise.

Also measured: the PSF map's share of a default deconvolution (bundled model, default grid, 30
iterations, tv 0.002), the peak RSS of a default untiled deconvolution in a fresh process (``VmHWM``)
against the float32 image bytes, the growth exponent of the whole run's time with pixel count, and with
``--file-size N`` the whole CLI run (`process_file`) of an N² uint16 TIFF with the map's share of it.
Every ratio is printed beside its target with ``pass``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.fft

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fiji_bridge import Optics, deconvolve, estimate_psf_map, psf_batch, richardson_lucy  # noqa: E402
from fiji_bridge.restoration.sv_convolution import fft_length  # noqa: E402
try:                                                                                # package layout of issue 16
    from fiji_bridge.restoration.backend import fftw_module, resolve_device  # noqa: E402
except ImportError:
    from fiji_bridge.backend import resolve_device  # noqa: E402
    fftw_module = lambda: None  # noqa: E731

OPTICS = Optics(na=0.75, wavelength=0.53, pixel_size=0.16)
PSF_SIZE = 63                     # odd PSF of the requested 64² size (issue 15's measurements)
TV = 0.002
TARGETS = {                       # per-iteration ratio to the FFT floor, and the rest (issue 15)
    "si_tv_over_floor": 1.15, "sv_4x4_over_floor": 1.6, "sv_8x8_over_floor": 2.2,
    "map_share_of_default_run": 0.10, "map_share_of_file_run": 0.25, "peak_rss_over_image_bytes": 16.0,
    "growth_exponent": 1.05,
}


class FloorRL:
    """Plain RL at the FFT floor: x ← x · Hᵀ(y / Hx), PSF spectrum precomputed, 4 real FFTs an iteration
    on the linear-convolution size rounded up to an even 5-smooth length, scipy.fft on 1 thread."""

    def __init__(self, image: np.ndarray, psf: np.ndarray):
        h, w = psf.shape
        self.y = image.astype(np.float32)
        self.s = (fft_length(image.shape[0] + h - 1, 2), fft_length(image.shape[1] + w - 1, 2))
        self.crop = (slice((h - 1) // 2, (h - 1) // 2 + image.shape[0]),
                     slice((w - 1) // 2, (w - 1) // 2 + image.shape[1]))
        psf = psf.astype(np.float32) / psf.sum()
        self.H = scipy.fft.rfft2(psf, s=self.s, workers=1)
        self.Ht = scipy.fft.rfft2(psf[::-1, ::-1], s=self.s, workers=1)   # adjoint: the flipped PSF, same crop
        self.floor = np.float32(1e-6 * self.y.max())

    def __call__(self, iterations: int) -> np.ndarray:
        y, s, crop = self.y, self.s, self.crop
        x = np.full(y.shape, y.mean(), np.float32)
        for _ in range(iterations):
            X = scipy.fft.rfft2(x, s=s, workers=1)
            X *= self.H
            blur = scipy.fft.irfft2(X, s=s, workers=1)[crop]
            ratio = np.maximum(blur, self.floor, out=np.empty_like(y))
            np.divide(y, ratio, out=ratio)
            R = scipy.fft.rfft2(ratio, s=s, workers=1)
            R *= self.Ht
            x *= scipy.fft.irfft2(R, s=s, workers=1)[crop]
        return x


def psf_grid(g: int, size: int, rng) -> np.ndarray:
    coeffs = rng.uniform(-0.2, 0.2, (g * g, 3)) + [0.2, 0, 0]
    return psf_batch(OPTICS, [4, 5, 6], coeffs, size).reshape(g, g, size, size)


def timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def per_iteration(fn, n: int, sync, repeats: int = 2) -> float:
    """Seconds per iteration: (t(1 + n) - t(1)) / n, each time the least of ``repeats`` runs (bursts of
    other work on a shared machine only ever add time)."""
    def run(k):
        fn(k)
        sync()
    short = min(timed(run, 1) for _ in range(repeats))
    long = min(timed(run, 1 + n) for _ in range(repeats))
    return max(long - short, 1e-9) / n


def interleaved(methods: dict, n: int, trials: int, sync, log) -> dict:
    """Per-iteration times of each method with skimage and the floor run before and after it, per trial;
    ratios per trial, medians reported."""
    out = {}
    for name, fn in methods.items():
        fn(1)                                        # warm-up (plans, allocations)
        sync()
        rows = []
        for _ in range(trials):
            sk0, fl0 = per_iteration(methods["skimage"], n, sync), per_iteration(methods["floor"], n, sync)
            t = per_iteration(fn, n, sync)
            sk1, fl1 = per_iteration(methods["skimage"], n, sync), per_iteration(methods["floor"], n, sync)
            rows.append((t, t / ((fl0 + fl1) / 2), t / ((sk0 + sk1) / 2), (fl0 + fl1) / (sk0 + sk1)))
        rows = np.array(rows)
        out[name] = {"s_per_it": float(np.median(rows[:, 0])), "over_floor": float(np.median(rows[:, 1])),
                     "over_skimage": float(np.median(rows[:, 2])),
                     "floor_over_skimage": float(np.median(rows[:, 3])),
                     "over_floor_trials": [round(float(r), 3) for r in rows[:, 1]]}
        log(f"  {name}: {out[name]['over_floor']:.2f}x floor, {out[name]['over_skimage']:.2f}x skimage")
    return out


def check(value: float, target: float) -> dict:
    return {"value": round(float(value), 4), "target": f"<= {target}", "pass": bool(value <= target)}


def speed(size: int, n: int, trials: int, xp, sync, rng, log) -> dict:
    from skimage.restoration import richardson_lucy as sk_rl
    host = rng.poisson(100, (size, size)).astype(np.float32)
    image = xp.asarray(host)
    psf = psf_grid(1, PSF_SIZE, rng)[0, 0]
    grids = {g: xp.asarray(psf_grid(g, PSF_SIZE, rng)) for g in (4, 8)}
    floor = FloorRL(host, psf)
    psf_x = xp.asarray(psf)
    methods = {
        "skimage": lambda k: sk_rl(host, psf, num_iter=k, clip=False),
        "floor": floor,
        "si_tv0": lambda k: richardson_lucy(image, psf_x, iterations=k, tv=0.0),
        "si_tv": lambda k: richardson_lucy(image, psf_x, iterations=k, tv=TV),
        "sv_4x4": lambda k: richardson_lucy(image, grids[4], iterations=k, tv=TV),
        "sv_8x8": lambda k: richardson_lucy(image, grids[8], iterations=k, tv=TV),
    }
    log(f"{size}²: per-iteration times, {trials} trials of {n} iterations")
    res = interleaved(methods, n, trials, sync, log)
    res["targets"] = {f"{k}_over_floor": check(res[k]["over_floor"], TARGETS[f"{k}_over_floor"])
                      for k in ("si_tv", "sv_4x4", "sv_8x8")}
    return res


def specimen(size: int, seed: int = 1) -> np.ndarray:
    """Poisson-noisy beads and stripes (uint16), as bench_scale."""
    rng = np.random.default_rng(seed)
    yy, xx = np.ogrid[:size, :size]
    img = np.broadcast_to(50.0 + 100.0 * (np.sin(xx / 13.0 + yy / 29.0) > 0.5), (size, size)).copy()
    idx = rng.integers(0, size, (size * size // 400, 2))
    img[idx[:, 0], idx[:, 1]] += rng.uniform(200, 2000, len(idx))
    return rng.poisson(img).astype(np.uint16)


def whole_run(size: int, trials: int, device: str, log, iterations: int = 30) -> dict:
    """PSF map (bundled model) and the deconvolution with that map (default grid and tiling, 30 iterations,
    tv 0.002), timed separately; the map's share is map / (map + deconvolution), median over trials. FFTW
    plans are measured before the timing (a machine's first run of a shape pays ~0.5-1 s a plan once)."""
    img = specimen(size)
    rows = []
    warm = True     # one untimed deconvolution first: FFTW measures plans for new shapes once per machine (kept)
    for _ in range(trials):
        t = time.perf_counter()
        m = estimate_psf_map(img, device=device)
        t_map = time.perf_counter() - t
        if warm:
            deconvolve(img, iterations=1, tv=TV, psf_map=m, device=device)
            warm = False
        t = time.perf_counter()
        deconvolve(img, iterations=iterations, tv=TV, psf_map=m, device=device)
        t_rl = time.perf_counter() - t
        rows.append((t_map, t_rl, t_map / (t_map + t_rl)))
    rows = np.array(rows)
    med = np.median(rows, axis=0)
    log(f"  whole run {size}²: map {med[0]:.2f} s, deconvolution {med[1]:.2f} s, map share {med[2]:.3f}")
    return {"map_s": float(med[0]), "deconvolution_s": float(med[1]), "total_s": float(med[0] + med[1]),
            "map_share": float(med[2]), "iterations": iterations, "tv": TV}


_RSS_CHILD = """
import sys, numpy as np
sys.path.insert(0, {root!r})
from fiji_bridge import deconvolve
def hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM'):
            return int(line.split()[1]) * 1024
img = np.load({path!r})          # uint16, as read from a TIFF
before = hwm()
deconvolve(img, device={device!r}, tile=None)
print(before, hwm())
"""


def peak_rss(size: int, device: str) -> dict:
    """Peak RSS (VmHWM) of a default untiled deconvolution (map + RL, default iterations/tv) of a
    size² uint16 image in a fresh process, against the float32 image's bytes. ``rss_before_run`` is the
    process after its imports and the uint16 image (what the run adds is ``run_increment``)."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "specimen.npy"
        np.save(path, specimen(size))
        code = _RSS_CHILD.format(root=str(ROOT), path=str(path), device=device)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, peak = (int(v) for v in out.stdout.split()[-2:])
    image_bytes = size * size * 4
    return {"size": size, "peak_rss_bytes": peak, "rss_before_run_bytes": before, "image_float32_bytes": image_bytes,
            "peak_over_image_bytes": peak / image_bytes, "run_increment_over_image_bytes": (peak - before) / image_bytes}


_FILE_CHILD = """
import json, sys, time
import numpy as np, tifffile
sys.path.insert(0, {root!r})
sys.path.insert(0, {bench!r})
import fiji_bridge.pipeline as pipeline
from bench_rl import specimen
src, dst, size = {src!r}, {dst!r}, {size}
out = tifffile.memmap(src, shape=(size, size), dtype=np.uint16)      # the file, written band by band
tile = specimen(1024)
for r in range(0, size, 1024):
    for c in range(0, size, 1024):
        block = out[r:r + 1024, c:c + 1024]
        block[...] = tile[:block.shape[0], :block.shape[1]]
out.flush()
del out
spent = []
estimate = pipeline.estimate_psf_map
def timed(*args, **kwargs):
    t = time.perf_counter()
    try:
        return estimate(*args, **kwargs)
    finally:
        spent.append(time.perf_counter() - t)
pipeline.estimate_psf_map = timed
t = time.perf_counter()
done = pipeline.process_file(src, dst, iterations={iterations}, tv={tv}, device={device!r})
total = time.perf_counter() - t
print(json.dumps({{"map_s": sum(spent), "total_s": total, "tiled": done["tiled"], "psf_grid": done["psf_grid"]}}))
"""


def file_run(size: int, device: str, iterations: int = 30) -> dict:
    """The whole CLI run (`process_file`: lazy read, map band by band, tiled deconvolution, memory-mapped output)
    of a size² uint16 TIFF in a fresh process, with the PSF map's share of it (issue 15: ≤ 25 % at 20000²)."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="semiblind-file-") as tmp:
        code = _FILE_CHILD.format(root=str(ROOT), bench=str(ROOT / "benchmarks"), src=str(Path(tmp) / "in.tif"),
                                  dst=str(Path(tmp) / "out.tif"), size=size, iterations=iterations, tv=TV,
                                  device=device)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res.update(size=size, iterations=iterations, tv=TV, map_share=res["map_s"] / res["total_s"])
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="512² only, fewer iterations and trials")
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="per-iteration sizes (default 1024 2048)")
    ap.add_argument("--growth-sizes", type=int, nargs="+", default=None,
                    help="whole-run sizes for the growth exponent (default 1024 2048 4096)")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--skip", nargs="*", default=[], choices=["speed", "map", "rss", "growth"])
    ap.add_argument("--file-size", type=int, default=None,
                    help="also time the whole CLI run of a N² uint16 TIFF (e.g. 20000: ~10 min on 2 cores)")
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()
    xp = resolve_device(args.device)
    sync = (lambda: xp.cuda.Stream.null.synchronize()) if xp is not np else (lambda: None)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    rng = np.random.default_rng(0)
    sizes = args.sizes or ([512] if args.quick else [1024, 2048])
    growth_sizes = args.growth_sizes or ([256, 512] if args.quick else [1024, 2048, 4096])
    trials = max(args.trials, 1 if args.quick else 3)
    n = 2 if args.quick else 5
    try:
        from importlib.metadata import version
        fftw = version("pyfftw")
    except Exception:
        fftw = None
    results: dict = {
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "load_average": os.getloadavg(), "device": args.device, "card": "none" if args.device == "cpu" else None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "semiblind_threads": os.environ.get("SEMIBLIND_THREADS"),
        "pyfftw": fftw, "engine_fft": "fftw" if (args.device == "cpu" and fftw_module() is not None) else
        ("pocketfft" if args.device == "cpu" else "cufft"), "psf": [PSF_SIZE, PSF_SIZE], "tv": TV, "iterations_timed": n, "trials": trials,
        "baseline": "skimage.restoration.richardson_lucy (clip=False) and the FFT floor, before and after each method",
    }
    summary = {}
    if "speed" not in args.skip:
        results["per_iteration"] = {}
        for size in sizes:
            res = speed(size, n, trials, xp, sync, rng, log)
            results["per_iteration"][str(size)] = res
            for k, v in res["targets"].items():
                summary[f"{k}@{size}"] = v
    if "map" not in args.skip:
        results["map_share"] = {}
        for size in ([256] if args.quick else [1024, 2048]):
            res = whole_run(size, 1 if args.quick else trials, args.device, log)
            results["map_share"][str(size)] = res
            summary[f"map_share_of_default_run@{size}"] = check(res["map_share"], TARGETS["map_share_of_default_run"])
    if "rss" not in args.skip:
        size = 512 if args.quick else 2048
        res = peak_rss(size, args.device)
        log(f"  peak RSS {size}²: {res['peak_rss_bytes'] / 2**20:.0f} MiB = {res['peak_over_image_bytes']:.1f}x image")
        results["peak_rss"] = res
        summary[f"peak_rss_over_image_bytes@{size}"] = check(res["peak_over_image_bytes"],
                                                              TARGETS["peak_rss_over_image_bytes"])
    if "growth" not in args.skip:
        runs = {}
        for size in growth_sizes:
            runs[str(size)] = whole_run(size, 1, args.device, log, iterations=30)
        px = np.log([s * s for s in growth_sizes])
        expo = float(np.polyfit(px, np.log([runs[str(s)]["total_s"] for s in growth_sizes]), 1)[0])
        results["growth"] = {"runs": runs, "exponent": expo,
                             "measured": f"whole run (map + 30 iterations tv {TV}, default grid and tiling) "
                                         f"at {', '.join(f'{s}²' for s in growth_sizes)}"}
        summary["growth_exponent"] = check(expo, TARGETS["growth_exponent"])
    if args.file_size:
        res = file_run(args.file_size, args.device)
        log(f"  file run {args.file_size}²: map {res['map_s']:.0f} s of {res['total_s']:.0f} s, share {res['map_share']:.3f}")
        results["file_run"] = res
        summary[f"map_share_of_file_run@{args.file_size}"] = check(res["map_share"], TARGETS["map_share_of_file_run"])
    results["summary"] = summary
    text = json.dumps(results, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    for k, v in summary.items():
        log(f"{k:40s} {v['value']:8.3f}  target {v['target']:8s}  {'pass' if v['pass'] else 'FAIL'}")


if __name__ == "__main__":
    main()
