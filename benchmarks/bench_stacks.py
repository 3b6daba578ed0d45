"""Stacks (issue 14): peak memory of a streamed hyperstack against one plane, channel and time-lapse maps.

    python benchmarks/bench_stacks.py [--size 1024] [--frames 12] [--out benchmarks/results/stacks.json]

Each memory measurement runs in a fresh process (peak RSS, ``ru_maxrss``): a T x 2-channel OME-TIFF of
``size``² planes through `fiji_bridge.stacks.process_stack_file`, and one plane through the 2-D
`fiji_bridge.pipeline.process_file`. Then a 2-channel simulation (300 / 20 photons) restored with the
channels' maps estimated alone and with the best channel's map, and the flicker of six frames' maps.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import resource, sys, time, json
t = time.time()
if sys.argv[1] == "stack":
    from fiji_bridge.stacks import process_stack_file
    process_stack_file(sys.argv[2], sys.argv[3], iterations=10, tv=0.002)
else:
    from fiji_bridge.pipeline import process_file
    process_file(sys.argv[2], sys.argv[3], iterations=10, tv=0.002)
print(json.dumps({"seconds": time.time() - t, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def memory(size: int, frames: int, folder: Path) -> dict:
    import tifffile
    from fiji_bridge.estimation.model import PSFModel
    from fiji_bridge.simulation.simulate import simulate_tilted
    plane = simulate_tilted(PSFModel().config, 0, (size, size), 300.0).blurred.astype(np.uint16)
    rng = np.random.default_rng(0)
    shape = (frames, 2, size, size)
    tifffile.imwrite(folder / "stack.ome.tif", (rng.poisson(plane).astype(np.uint16) for _ in range(frames * 2)),
                     shape=shape, dtype="uint16", ome=True, metadata={
                         "axes": "TCYX", "PhysicalSizeX": 0.16, "PhysicalSizeY": 0.16, "TimeIncrement": 10.0,
                         "Channel": {"Name": ["a", "b"], "EmissionWavelength": [530.0, 560.0],
                                     "EmissionWavelengthUnit": ["nm", "nm"]}})
    tifffile.imwrite(folder / "plane.tif", plane)
    out = {"stack_shape": list(shape), "stack_uint16_mib": np.prod(shape) * 2 / 2**20,
           "stack_float32_output_mib": np.prod(shape) * 4 / 2**20}
    for kind, src in (("plane", "plane.tif"), ("stack", "stack.ome.tif")):
        done = subprocess.run([sys.executable, "-c", CHILD, kind, str(folder / src), str(folder / f"out_{src}")],
                              capture_output=True, text=True, check=True)
        out[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def channels_and_frames() -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.test_stacks import LAMS, _map_error, _nrmse, _tilted
    from fiji_bridge.stacks import deconvolve_stack, flicker
    rows: dict[str, list] = {"independent": [], "best": [], "joint": []}
    for seed in range(3):
        rng = np.random.default_rng(seed)
        sims = [_tilted(rng, p, lam) for p, lam in zip((300.0, 20.0), LAMS)]
        blurred = np.stack([b for _, b, _ in sims])
        for mode in rows:
            r = deconvolve_stack(blurred, "CYX", wavelengths=LAMS, channels=mode, iterations=30, tv=0.01)
            rows[mode].append([_nrmse(r.image[c], sims[c][0]) for c in range(2)]
                              + [_map_error(r.maps[(c,)], sims[c][2]) for c in range(2)])
    rng = np.random.default_rng(11)
    frames = np.stack([_tilted(rng, 100.0)[1] for _ in range(6)])
    fl = {mode: flicker([deconvolve_stack(frames, "TYX", frames=mode, iterations=3, tv=0.0).maps[(t,)]
                         for t in range(6)]) for mode in ("independent", "smooth", "single")}
    return {"two_channels_300_20_photons": {m: dict(zip(("nrmse_c0", "nrmse_c1", "map_rmse_c0", "map_rmse_c1"),
                                                         np.mean(v, 0).round(4).tolist())) for m, v in rows.items()},
            "flicker_waves_6_frames_100_photons": fl}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    t = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        result = {"memory": memory(args.size, args.frames, Path(tmp)), **channels_and_frames()}
    result["seconds"] = time.time() - t
    text = json.dumps(result, indent=1, default=float)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
