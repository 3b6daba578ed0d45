"""Envelope benchmark: PSF maps and restorations beyond the v1 model's range, under model mismatch.

Test images are rendered with a PSF model the network never saw — `psfmodels`' vectorial Gibson–Lanni PSF
(Aguet 2009) with matched refractive indices, at the focal shift ``z = defocus_to_z(c)`` of the nominal
Zernike defocus ``c`` — on 1024² (``--size``) specimens: procedural cells, filaments, beads, membranes and
held-out photographs (scikit-image's ``cell``, ``immunohistochemistry``, ``gravel``). Layouts: a tilted plane
(defocus rising linearly from 0 at the left edge to ``c_max`` at the right) and a piecewise layout (each
quadrant its own defocus). Poisson noise at a peak of 300 and 3000 photons over a 5 % background.

Methods (the same iteration count and TV weight for all):
(a) SemiBlind: the model's PSF map + SV TV-RL (`fiji_bridge.deconvolve`);
(b) oracle: SV TV-RL with the true vectorial PSFs at the same grid nodes;
(c) SI TV-RL with the mean of the true PSFs over the field;
(c') SI TV-RL with the best single vectorial PSF, chosen against the truth among 7 defocus values;
(a) is whatever the model's config says: the bundled default runs its near-focus model below its blend
    (`fiji_bridge.estimation.psf_map.blend_near_focus`); a config without ``near_focus_model`` measures the
    wide network alone.
Maps: Spearman(estimate, truth) over informative patches, RMSE where the true defocus >= 0.3 waves, the
out-of-range fraction, and the honesty of the predicted σ. A sampling sweep (pixel·NA/λ 0.10–0.60 with
NA 0.3–1.4 and matched immersion) measures the map alone. Timing: map vs a default 2048² deconvolution.

``python benchmarks/evaluate_envelope.py --model M.onnx [--quick]`` writes ``envelope.json``, ``envelope.md`` and
``envelope.png`` into ``--out`` (default ``benchmarks/results``) and prints the summary JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats
from skimage import transform

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fiji_bridge.estimation.model import PSFModel  # noqa: E402
from fiji_bridge.optics import Optics, defocus_to_z  # noqa: E402
from fiji_bridge.pipeline import deconvolve  # noqa: E402
from fiji_bridge.estimation.psf_map import default_grid, estimate_psf_map, psf_size_for  # noqa: E402
from fiji_bridge.restoration.richardson_lucy import richardson_lucy  # noqa: E402
from fiji_bridge.simulation.simulate import blur_beyond_field  # noqa: E402
from fiji_bridge.simulation.specimens import GENERATORS  # noqa: E402
from fiji_bridge.restoration.sv_convolution import node_centres  # noqa: E402
from training.depth_calibration import vectorial_psf  # noqa: E402
from training.metrics import snr_db  # noqa: E402
from training.sources import load_source  # noqa: E402

SPECIMENS = ("cells", "filaments", "beads", "membranes", "photo:cell", "photo:immunohistochemistry", "photo:gravel")
#: Optics of the restoration cases: NA 0.75 air, 0.53 µm, 0.16 µm pixels (pixel·NA/λ = 0.226).
BASE_OPTICS = Optics(na=0.75, wavelength=0.53, pixel_size=0.16, n=1.0)
#: Sampling sweep: (pixel·NA/λ, NA, n) — objectives from 10x/0.3 to 100x/1.4 oil.
SAMPLINGS = ((0.10, 1.4, 1.518), (0.16, 1.2, 1.33), (0.25, 0.75, 1.0), (0.40, 0.5, 1.0), (0.60, 0.3, 1.0))
#: A high-NA oil objective at the finest sampling of the envelope (100x/1.4 at ~40 nm pixels): the restorations
#: are measured there too (tilts at 3000 photons), where the map is coarsest in image pixels.
HIGH_NA_OPTICS = Optics(na=1.4, wavelength=0.55, pixel_size=0.10 * 0.55 / 1.4, n=1.518)
BACKGROUND = 0.05
def specimen(name: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Sharp specimen in [0, 1]: a procedural generator, or a held-out photograph resized to ``shape``."""
    if name.startswith("photo:"):
        img = load_source(name.split(":", 1)[1])
        return np.clip(transform.resize(img, shape, order=3, mode="reflect"), 0, 1).astype(np.float32)
    return GENERATORS[name](shape, rng).astype(np.float32)


def vectorial_grid(optics: Optics, coefficients: np.ndarray, size: int) -> np.ndarray:
    """Vectorial PSFs (..., size, size) at the focal shifts of the nominal defocus ``coefficients``."""
    flat = [vectorial_psf(optics, float(defocus_to_z(c, optics)), size) for c in np.ravel(coefficients)]
    return np.stack(flat).reshape(*np.shape(coefficients), size, size).astype(np.float32)


def true_defocus(layout: str, c_max: float, ys: np.ndarray, xs: np.ndarray, shape, quadrants) -> np.ndarray:
    """True nominal defocus at pixel coordinates ``ys`` x ``xs`` (len(ys), len(xs))."""
    if layout == "tilt":
        return np.broadcast_to(c_max * np.clip(xs / (shape[1] - 1), 0, 1), (len(ys), len(xs))).copy()
    qy, qx = (ys >= shape[0] // 2).astype(int), (xs >= shape[1] // 2).astype(int)
    return quadrants[qy[:, None], qx[None, :]]


def render(layout: str, c_max: float, spec: str, photons: float, shape, optics: Optics, seed: int):
    """(blurred noisy image, truth scaled to photons, quadrant defocus or None)."""
    rng = np.random.default_rng(seed)
    truth = (specimen(spec, shape, rng) * (1 - BACKGROUND) + BACKGROUND) * photons
    size = psf_size_for(np.array([[[c_max * 1.3]]]), ["defocus"], optics.pixel_size * optics.na / optics.wavelength,
                        min(shape))
    if layout == "tilt":
        nodes = 16
        xs = node_centres(shape[1], nodes)
        psfs = vectorial_grid(optics, c_max * np.clip(xs / (shape[1] - 1), 0, 1), size)[None]
        blurred, quadrants = blur_beyond_field(truth, psfs), None
    else:
        quadrants = rng.permutation(np.linspace(0.1, c_max, 4)).reshape(2, 2)
        psfs = vectorial_grid(optics, quadrants, size)
        blurred = np.zeros(shape, np.float32)
        h, w = shape
        for qy, qx in np.ndindex(2, 2):
            region = (slice(qy * (h // 2), None if qy else h // 2), slice(qx * (w // 2), None if qx else w // 2))
            blurred[region] = blur_beyond_field(truth, psfs[qy, qx])[region]
    noisy = rng.poisson(np.clip(blurred, 0, None)).astype(np.float32)
    return noisy, truth, quadrants


def map_scores(m, layout: str, c_max: float, shape, quadrants) -> dict:
    """Spearman and RMSE of the estimated defocus against the truth at the map's patch centres."""
    truth = true_defocus(layout, c_max, m.centres_y, m.centres_x, shape, quadrants)
    est = m.parameter("defocus")
    keep = m.informative
    high = keep & (truth >= 0.3)
    out = {"spearman": float(stats.spearmanr(est[keep], truth[keep])[0]) if keep.sum() > 2 else None,
           "rmse_where_true_ge_0.3": float(np.sqrt(np.mean((est[high] - truth[high]) ** 2))) if high.any() else None,
           "rmse": float(np.sqrt(np.mean((est[keep] - truth[keep]) ** 2))),
           "informative_fraction": float(keep.mean()),
           "out_of_range_fraction": float(m.out_of_range.mean()),
           "estimate_range": [float(est.min()), float(est.max())]}
    raw, sigma = m.raw[0][keep], m.std[0][keep]
    within = np.abs(raw - truth[keep]) <= sigma
    out["within_1_sigma"] = float(within.mean())
    return out


def restore_case(model: PSFModel, layout: str, c_max: float, spec: str, photons: float, shape, seed: int,
                 iterations: int, tv: float, optics: Optics = BASE_OPTICS) -> dict:
    image, truth, quadrants = render(layout, c_max, spec, photons, shape, optics, seed)
    where = {} if optics == BASE_OPTICS else {"optics": optics.to_dict()}
    t0 = time.perf_counter()
    try:
        ours = deconvolve(image, iterations=iterations, tv=tv, model=model, optics=optics)
    except ValueError as exc:       # refused (e.g. no patch read as informative): counted, not averaged
        return {"layout": layout, "c_max": c_max, "specimen": spec, "photons": photons, "seed": seed,
                "refused": str(exc), **where}
    t_ours = time.perf_counter() - t0
    m = ours.psf_map
    grid = default_grid(shape)
    ys, xs = node_centres(shape[0], grid[0]), node_centres(shape[1], grid[1])
    c_nodes = true_defocus(layout, c_max, ys, xs, shape, quadrants)
    size = psf_size_for(c_nodes[None], ["defocus"], optics.pixel_size * optics.na / optics.wavelength, min(shape))
    true_psfs = vectorial_grid(optics, c_nodes, size)
    oracle = richardson_lucy(image, true_psfs, iterations, tv, centres=(ys, xs))
    mean_psf = richardson_lucy(image, true_psfs.mean(axis=(0, 1)), iterations, tv)
    best = -np.inf
    for c in np.linspace(0, c_max, 7):
        single = richardson_lucy(image, vectorial_grid(optics, np.array(c), size), iterations, tv)
        best = max(best, snr_db(single, truth))
    snr = {"a": snr_db(ours.image, truth), "b": snr_db(oracle, truth), "c": snr_db(mean_psf, truth),
           "c'": best, "input": snr_db(image, truth)}
    return {"layout": layout, "c_max": c_max, "specimen": spec, "photons": photons, "seed": seed, "snr": snr,
            "map": map_scores(m, layout, c_max, shape, quadrants), "seconds_a": t_ours, **where}


def sampling_case(model: PSFModel, sampling: float, na: float, n: float, spec: str, shape, seed: int,
                  c_max: float = 0.8) -> dict:
    wavelength = 0.55
    optics = Optics(na=na, wavelength=wavelength, pixel_size=sampling * wavelength / na, n=n)
    image, _, _ = render("tilt", c_max, spec, 3000.0, shape, optics, seed)
    try:
        m = estimate_psf_map(image, model, optics=optics)
    except ValueError as exc:
        return {"sampling": sampling, "na": na, "n": n, "specimen": spec, "refused": str(exc)}
    return {"sampling": sampling, "na": na, "n": n, "specimen": spec, **map_scores(m, "tilt", c_max, shape, None)}


def time_map_vs_run(model: PSFModel, size: int, iterations: int, tv: float) -> dict:
    image, _, _ = render("tilt", 0.8, "cells", 1000.0, (size, size), BASE_OPTICS, 0)
    t0 = time.perf_counter()
    m = estimate_psf_map(image, model, optics=BASE_OPTICS)
    t_map = time.perf_counter() - t0
    t0 = time.perf_counter()
    deconvolve(image, iterations=iterations, tv=tv, psf_map=m, optics=BASE_OPTICS)
    t_rest = time.perf_counter() - t0
    return {"size": size, "map_s": t_map, "restoration_s": t_rest, "map_fraction": t_map / (t_map + t_rest)}


def _mean_std(values) -> dict:
    v = np.asarray([x for x in values if x is not None], float)
    return {"mean": float(v.mean()) if v.size else None, "std": float(v.std()) if v.size else None, "n": int(v.size)}


def summarize(cases: list[dict], sweep: list[dict]) -> dict:
    groups: dict[str, list[dict]] = {}
    refused: dict[str, list[str]] = {}
    for c in cases:
        key = f"{c['layout']} 0→{c['c_max']:g}, {c['photons']:g} ph"
        if "optics" in c:
            key += f", NA {c['optics']['na']:g} n {c['optics']['n']:g}"
        if "refused" in c:
            refused.setdefault(key, []).append(f"{c['specimen']}: {c['refused']}")
            continue
        groups.setdefault(key, []).append(c)
    out = {}
    for key, rows in groups.items():
        snr = {k: _mean_std([r["snr"][k] for r in rows]) for k in ("a", "b", "c", "c'", "input")
               if k in rows[0]["snr"]}
        gain_a = np.array([r["snr"]["a"] - r["snr"]["c'"] for r in rows])
        gain_b = np.array([r["snr"]["b"] - r["snr"]["c'"] for r in rows])
        out[key] = {"snr_db": snr,
                    "a_minus_b_db": _mean_std([r["snr"]["a"] - r["snr"]["b"] for r in rows]),
                    "recovered_oracle_gain_over_c_prime": float(gain_a.mean() / gain_b.mean())
                    if abs(gain_b.mean()) > 1e-6 else None,
                    "map_spearman": _mean_std([r["map"]["spearman"] for r in rows]),
                    "map_rmse_where_true_ge_0.3": _mean_std([r["map"]["rmse_where_true_ge_0.3"] for r in rows]),
                    "map_within_1_sigma": _mean_std([r["map"]["within_1_sigma"] for r in rows]),
                    "out_of_range_fraction": _mean_std([r["map"]["out_of_range_fraction"] for r in rows]),
                    "a_below_input": sum(r["snr"]["a"] < r["snr"]["input"] for r in rows),
                    "refused": refused.get(key, [])}
    by_sampling: dict[str, list[dict]] = {}
    for r in sweep:
        by_sampling.setdefault(f"{r['sampling']:g} (NA {r['na']:g}, n {r['n']:g})", []).append(r)
    sampling = {k: {"spearman": _mean_std([r.get("spearman") for r in rows]),
                    "refused": sum("refused" in r for r in rows)} for k, rows in by_sampling.items()}
    return {"restoration": out, "sampling_sweep": sampling}


def markdown(result: dict) -> str:
    lines = [f"# Envelope benchmark — model {result['model']}", "",
             f"{result['protocol']}", "",
             "| case | (a) SemiBlind | (b) oracle | (c) mean PSF | (c') best single | input | a−b | gain recovered | "
             "map Spearman | map RMSE (true ≥ 0.3) | σ honest (within 1σ) | (a) below input |", "|" + "---|" * 12]

    def pm(s: dict) -> str:
        return "–" if s["mean"] is None else f"{s['mean']:.2f} ± {s['std']:.2f}"

    refusals = [f"{key}: {why}" for key, r in result["summary"]["restoration"].items() for why in r["refused"]]
    for key, r in result["summary"]["restoration"].items():
        s = r["snr_db"]
        rec = r["recovered_oracle_gain_over_c_prime"]
        lines.append(f"| {key} | {pm(s['a'])} | {pm(s['b'])} | {pm(s['c'])} | {pm(s[chr(99) + chr(39)])} | "
                     f"{pm(s['input'])} | {pm(r['a_minus_b_db'])} | {'–' if rec is None else f'{rec:.0%}'} | "
                     f"{pm(r['map_spearman'])} | {pm(r['map_rmse_where_true_ge_0.3'])} | {pm(r['map_within_1_sigma'])} | "
                     f"{r['a_below_input']} of {r['snr_db']['a']['n']} |")
    if refusals:
        lines += ["", "Refused by (a), left out of its row (and of (b), (c), (c') there): " + "; ".join(refusals)]
    lines += ["", "| sampling pixel·NA/λ | map Spearman | refused |", "|---|---|---|"]
    for key, r in result["summary"]["sampling_sweep"].items():
        lines.append(f"| {key} | {pm(r['spearman'])} | {r['refused']} |")
    if "timing" in result:
        t = result["timing"]
        lines += ["", f"Map time: {t['map_s']:.1f} s of {t['map_s'] + t['restoration_s']:.1f} s "
                      f"({t['map_fraction']:.0%}) for a default {t['size']}² run."]
    return "\n".join(lines) + "\n"


def figure(cases: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for k, colour in (("a", "C0"), ("b", "C2"), ("c", "C3"), ("c'", "C1")):
        ax.scatter([c["snr"]["input"] for c in cases], [c["snr"][k] for c in cases], s=12, c=colour, label=k)
    ax.set_xlabel("input SNR (dB)")
    ax.set_ylabel("restored SNR (dB)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="ONNX model (default: the bundled one)")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--quick", action="store_true", help="CI mode: 256² images, 2 specimens, 1 seed (< 2 min)")
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--tv", type=float, default=0.002)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--size", type=int, default=None, help="image side (default 1024; 256 with --quick)")
    ap.add_argument("--specimens", default=None, help="comma-separated subset of " + ",".join(SPECIMENS))
    ap.add_argument("--tag", default="", help="suffix of the output file names")
    args = ap.parse_args(argv)
    model = PSFModel(args.model)
    size = args.size or (256 if args.quick else 1024)
    specs = tuple(args.specimens.split(",")) if args.specimens else (
        ("cells", "photo:cell") if args.quick else SPECIMENS)
    tilts = (0.8, 1.5) if args.quick else (0.35, 0.8, 1.5)
    photon_levels = (3000.0,) if args.quick else (300.0, 3000.0)
    cases = []
    for seed in range(args.seeds):
        for spec in specs:
            for photons in photon_levels:
                for c_max in tilts:
                    cases.append(restore_case(model, "tilt", c_max, spec, photons, (size, size), seed,
                                              args.iterations, args.tv))
                if not args.quick:
                    cases.append(restore_case(model, "piecewise", 1.3, spec, photons, (size, size), seed,
                                              args.iterations, args.tv))
            if not args.quick:
                cases += [restore_case(model, "tilt", c_max, spec, 3000.0, (size, size), seed, args.iterations,
                                       args.tv, HIGH_NA_OPTICS) for c_max in (0.8, 1.5)]
    sweep = [sampling_case(model, s, na, n, spec, (size if args.quick else 512,) * 2, 0)
             for s, na, n in SAMPLINGS for spec in specs[:2 if args.quick else 4]]
    result = {"model": str(model.path.name), "model_version": model.config.version,
              "protocol": (f"{size}² images, specimens {', '.join(specs)}; vectorial PSF (psfmodels); "
                           f"{args.iterations} iterations, TV {args.tv} for every method; seeds {args.seeds}"),
              "cases": cases, "sampling_cases": sweep, "summary": summarize(cases, sweep)}
    if not args.quick:
        result["timing"] = time_map_vs_run(model, 2 * size, args.iterations, args.tv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = ("envelope_quick" if args.quick else "envelope") + (f"_{args.tag}" if args.tag else "")
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    (out / f"{stem}.md").write_text(markdown(result))
    figure([c for c in cases if "snr" in c], out / f"{stem}.png")
    print(json.dumps(result["summary"], indent=1, default=float))
    return result


if __name__ == "__main__":
    main()
