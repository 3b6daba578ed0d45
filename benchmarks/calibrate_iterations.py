"""Calibration of the automatic restoration settings: best RL iteration count and TV weight vs photon level.

For each photon level, specimen and TV weight, a tilted-plane image (defocus 0 → ``--defocus`` waves RMS,
Zernike PSFs, Poisson noise over a 5 % background) is restored by SV TV-RL with its *true* PSFs (the oracle,
so the estimate of the map plays no part), and the SNR to the truth is recorded after every iteration. The
best (iterations, TV) per case of the first seed are fitted by power laws of the *estimated* photon level
(``fiji_bridge.noise.RestorationRule``); on the other seeds (held out) the rule is compared with every
fixed setting: the best fixed setting per photon level (chosen knowing the level) and the best single
fixed setting overall. Written to ``--out`` (default ``benchmarks/results/calibrate_iterations.json``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fiji_bridge.estimation.noise import RestorationRule, auto_settings  # noqa: E402
from fiji_bridge.optics import Optics  # noqa: E402
from fiji_bridge.optics.psf import psf_batch  # noqa: E402
from fiji_bridge.restoration.richardson_lucy import richardson_lucy  # noqa: E402
from fiji_bridge.simulation.simulate import blur_beyond_field  # noqa: E402
from fiji_bridge.restoration.sv_convolution import node_centres  # noqa: E402
from training.metrics import snr_db  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_envelope import specimen  # noqa: E402

OPTICS = Optics(na=0.75, wavelength=0.53, pixel_size=0.16)
PHOTONS = (100.0, 300.0, 1000.0, 3000.0, 10000.0)
TVS = (0.0, 0.002, 0.005, 0.01, 0.02)
FIXED_ITERATIONS = (5, 10, 20, 30, 60, 120)
SPECIMENS = ("cells", "filaments", "beads", "membranes", "photo:cell")


def case(spec: str, photons: float, size: int, defocus: float, seed: int, max_iterations: int) -> dict:
    rng = np.random.default_rng(seed)
    truth = (specimen(spec, (size, size), rng) * 0.95 + 0.05) * photons
    nodes = 4
    xs = node_centres(size, nodes)
    coeffs = np.zeros((nodes, 1))
    coeffs[:, 0] = defocus * xs / (size - 1)
    psfs = psf_batch(OPTICS, [4], coeffs, 41)[None]
    image = rng.poisson(np.clip(blur_beyond_field(truth, psfs), 0, None)).astype(np.float32)
    curves = {}
    for tv in TVS:
        snrs: list[float] = []
        richardson_lucy(image, psfs, max_iterations, tv, centres=(np.array([(size - 1) / 2]), xs),
                        callback=lambda i, x: snrs.append(snr_db(np.asarray(x), truth)))
        curves[tv] = snrs
    auto = auto_settings(image)
    return {"specimen": spec, "photons": photons, "seed": seed, "curves": {str(k): v for k, v in curves.items()},
            "auto": {k: v for k, v in auto.items() if k != "noise"}}


def best_of(c: dict) -> tuple[int, float, float]:
    """(iterations, tv, SNR) of the best setting of one case."""
    best = max(((int(np.argmax(v)) + 1, float(tv), max(v)) for tv, v in c["curves"].items()), key=lambda t: t[2])
    return best


def snr_at(c: dict, iterations: int, tv: float) -> float:
    tvs = np.array([float(t) for t in c["curves"]])
    curve = c["curves"][list(c["curves"])[int(np.argmin(np.abs(tvs - tv)))]]
    return curve[min(iterations, len(curve)) - 1]


def fit_rule(cases: list[dict], iterations_at_1000: float = 30.0, iterations_exponent: float = 0.3) -> RestorationRule:
    """TV weight as a power law of the *estimated* photon level, fitted (log-log least squares) to the best TV
    of each case at the iteration count the rule gives it. The iteration law is a design choice, not a fit:
    with the TV weight matched to the noise, SNR keeps rising with iterations (0.35–0.4 dB from 30 to 60
    at ≥ 3000 photons, < 0.2 dB at ≤ 300), so iterations grow slowly with photons around the default 30."""
    base = RestorationRule(iterations_at_1000=iterations_at_1000, iterations_exponent=iterations_exponent)
    ph, tv_best = [], []
    for c in cases:
        n = base.iterations(c["auto"]["photons"])
        tvs = [float(t) for t in c["curves"]]
        best = max(tvs, key=lambda t: c["curves"][str(t) if str(t) in c["curves"] else repr(t)][n - 1])
        if best > 0:
            ph.append(c["auto"]["photons"])
            tv_best.append(best)
    slope, intercept = np.polyfit(np.log(np.array(ph) / 1000.0), np.log(tv_best), 1)
    return RestorationRule(iterations_at_1000=iterations_at_1000, iterations_exponent=iterations_exponent,
                           iterations_range=base.iterations_range, tv_at_1000=float(np.exp(intercept)),
                           tv_exponent=float(slope), tv_range=base.tv_range)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--defocus", type=float, default=0.8)
    ap.add_argument("--seeds", type=int, default=2, help="seed 0 fits the rule, the others test it")
    ap.add_argument("--max-iterations", type=int, default=120)
    ap.add_argument("--out", default="benchmarks/results/calibrate_iterations.json")
    ap.add_argument("--refit", default=None, help="refit the rule on the curves of an earlier output JSON")
    args = ap.parse_args(argv)
    if args.refit:
        cases = json.loads(Path(args.refit).read_text())["cases"]
    else:
        cases = [case(s, p, args.size, args.defocus, seed, args.max_iterations)
                 for seed in range(args.seeds) for p in PHOTONS for s in SPECIMENS]
    rule = fit_rule([c for c in cases if c["seed"] == 0])
    test = [c for c in cases if c["seed"] > 0] or cases
    settings = [(n, tv) for n in FIXED_ITERATIONS for tv in TVS]
    overall = {f"{n} it, tv {tv}": float(np.mean([snr_at(c, n, tv) for c in test])) for n, tv in settings}
    best_overall = max(overall, key=overall.get)
    rows = []
    for level in PHOTONS:
        sel = [c for c in test if c["photons"] == level]
        fixed = {f"{n} it, tv {tv}": float(np.mean([snr_at(c, n, tv) for c in sel])) for n, tv in settings}
        budget = int(np.median([rule.iterations(c["auto"]["photons"]) for c in sel]))
        same_budget = {tv: float(np.mean([snr_at(c, budget, tv) for c in sel])) for tv in TVS}
        best_fixed_key = max(fixed, key=fixed.get)
        rows.append({"photons": level, "best_single_fixed_overall": [best_overall, fixed[best_overall]],
                     "best_fixed_tv_at_rule_iterations": [budget, max(same_budget, key=same_budget.get),
                                                          max(same_budget.values())],
                     "default_30_it_tv_0.002": fixed["30 it, tv 0.002"],
                     "best_per_case": [dict(zip(("iterations", "tv", "snr_db"), best_of(c))) for c in sel],
                     "rule_snr_db": float(np.mean([snr_at(c, rule.iterations(c["auto"]["photons"]),
                                                          rule.tv(c["auto"]["photons"])) for c in sel])),
                     "oracle_best_snr_db": float(np.mean([best_of(c)[2] for c in sel])),
                     "best_fixed_for_this_level": [best_fixed_key, fixed[best_fixed_key]],
                     "rule_settings": [[rule.iterations(c["auto"]["photons"]), rule.tv(c["auto"]["photons"])]
                                       for c in sel],
                     "estimated_photons": [c["auto"]["photons"] for c in sel]})
    result = {"protocol": f"{args.size}² tilt 0→{args.defocus} waves, oracle SV TV-RL, specimens "
                          f"{', '.join(SPECIMENS)}; rule fitted on seed 0, tested on seeds 1–{args.seeds - 1}",
              "rule": {"iterations_at_1000": rule.iterations_at_1000, "iterations_exponent": rule.iterations_exponent,
                       "tv_at_1000": rule.tv_at_1000, "tv_exponent": rule.tv_exponent,
                       "iterations_range": list(rule.iterations_range), "tv_range": list(rule.tv_range)},
              "levels": rows, "cases": cases}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"rule": result["rule"], "levels": [{k: v for k, v in r.items() if k != "best_per_case"}
                                                         for r in rows]}, indent=1))
    return result


if __name__ == "__main__":
    main()
