"""Held-out evaluation of an exported model: R², RMSE and accuracy per parameter at several noise levels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fiji_bridge.estimation.model import PSFModel

from .config import TrainingConfig
from .metrics import regression_metrics
from .synthesis import synthesize

#: Peak photon levels of the report; inf = noise-free.
#: Inner edges (waves RMS) of the true-defocus bands of the per-band metrics (within the model's range).
DEFOCUS_BANDS = (0.35, 0.8)
NOISE_LEVELS = {"noise-free": np.inf, "1000 photons": 1000.0, "200 photons": 200.0, "50 photons": 50.0}


def heldout_set(cfg: TrainingConfig, photons: float, n: int, seed: int = 12345):
    """Held-out images/seeds; the same set for every model evaluated with the same arguments."""
    return synthesize(cfg, np.random.default_rng([seed, int(min(photons, 1e9))]), n, split="heldout",
                      photons=photons)


def calibration(pred: np.ndarray, true: np.ndarray, low: float, high: float, bins: int = 7) -> dict:
    """Median and quartiles of the estimate in equal bins of the true value (where it is unsure, an
    estimate regresses towards the middle of the range: a flat run of medians is a range it cannot read)."""
    edges = np.linspace(low, high, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (true >= lo) & (true < hi) if hi < high else (true >= lo) & (true <= hi)
        q = [float(v) for v in np.percentile(pred[sel], [25, 50, 75])] if sel.any() else [None] * 3
        rows.append({"true": [round(float(lo), 4), round(float(hi), 4)], "n": int(sel.sum()),
                     "q25": q[0], "median": q[1], "q75": q[2]})
    return {"bins": rows}


def uncertainty_coverage(pred: np.ndarray, std: np.ndarray, true: np.ndarray) -> dict:
    """How honest the predicted standard deviation is: fractions of errors within 1 and 2 σ (a calibrated
    Gaussian gives 0.683 and 0.954) and the median σ (same units as the parameter)."""
    z = np.abs(pred - true) / np.maximum(std, 1e-12)
    return {"within_1_sigma": float(np.mean(z <= 1)), "within_2_sigma": float(np.mean(z <= 2)),
            "median_sigma": float(np.median(std)), "n": int(z.size)}


def sigma_calibration(z_scores: dict[str, list[np.ndarray]]) -> dict:
    """Per parameter, the factor on the predicted σ under which 68.3 % of the errors (all noise levels
    pooled) are within 1 σ, as for a Gaussian: the 68.3 % quantile of |error| / σ (1 = already honest)."""
    out = {}
    for name, parts in z_scores.items():
        z = np.concatenate(parts)
        out[name] = {"factor": float(np.quantile(z, 0.683)), "within_1_sigma_before": float(np.mean(z <= 1)),
                     "n": int(z.size)}
    return out


def evaluate(model_path: str | Path | None, cfg: TrainingConfig, n: int = 1000, out_dir: str | Path | None = None,
             chunk: int = 250) -> dict:
    """Evaluate the ONNX model (what ships, through the runtime loader) on held-out synthetic patches.

    Returns a dict ``{level: {parameter: metrics, "info_accuracy": ...}}`` and, with ``out_dir``,
    writes ``metrics.json`` and ``scatter.png`` there.
    """
    model = PSFModel(model_path)
    tol = model.config.accuracy_tolerance
    results, scatter, z_scores = {}, {}, {}
    for level, photons in NOISE_LEVELS.items():
        preds, stds, labels, infos, flags, kinds, beyonds, ranges = [], [], [], [], [], [], [], []
        for start in range(0, n, chunk):
            b = heldout_set(cfg, photons, min(chunk, n - start), seed=12345 + start)
            p = model.predict_inputs(b.inputs)          # the inputs are assembled and normalised as at inference
            preds.append(p.params), labels.append(b.labels), infos.append(p.info), flags.append(b.informative)
            # samples beyond the range train the range head; their labels are not regression targets
            beyonds.append(np.zeros(len(b.labels), bool) if b.beyond is None else b.beyond)
            kinds.append(b.kinds), stds.append(p.std)
            if p.beyond is not None:
                ranges.append(p.beyond)
        pred, std, lab, info, informative, kind, beyond = (np.concatenate(a) for a in (preds, stds, labels, infos, flags,
                                                                                       kinds, beyonds))
        flag = informative & ~beyond
        res = {name: regression_metrics(pred[flag, k], lab[flag, k], tol) for k, name in enumerate(model.config.names)}
        # Per specimen kind: real photographs carry blur of their own that the labels do not know.
        res["by_kind"] = {s: {name: regression_metrics(pred[flag & (kind == s), k], lab[flag & (kind == s), k], tol)
                              for k, name in enumerate(model.config.names)}
                          for s in sorted(set(kind[flag]))}
        first = cfg.model.parameters[0]
        res["calibration"] = {"parameter": first.name,
                              **calibration(pred[flag, 0], lab[flag, 0], first.low, first.high)}
        res["uncertainty"] = {name: uncertainty_coverage(pred[flag, k], std[flag, k], lab[flag, k])
                              for k, name in enumerate(model.config.names)}
        for k, name in enumerate(model.config.names):
            z_scores.setdefault(name, []).append(np.abs(pred[flag, k] - lab[flag, k]) / np.maximum(std[flag, k], 1e-12))
        # per band of true defocus: a wide-range model's error grows with the blur it reads
        edges = [first.low, *[e for e in DEFOCUS_BANDS if first.low < e < first.high], first.high]
        if len(edges) > 2:
            res["by_defocus_band"] = {
                f"{lo:g}-{hi:g}": regression_metrics(pred[sel, 0], lab[sel, 0], tol)
                for lo, hi in zip(edges[:-1], edges[1:])
                if (sel := flag & (lab[:, 0] >= lo) & (lab[:, 0] <= hi)).sum() > 2}
        if ranges:
            res["range_accuracy"] = float(np.mean((np.concatenate(ranges) > 0.5)[informative] == beyond[informative]))
        res["info_accuracy"] = float(np.mean((info > 0.5) == informative))
        res["informative_fraction"] = float(informative.mean())
        results[level] = res
        scatter[level] = (pred[flag], lab[flag])
    summary = {"tolerance_waves_rms": tol, "accuracy_definition": f"|predicted - true| <= {tol} waves RMS",
               "n_per_level": n, "split": "heldout images and procedural seeds", "levels": results,
               "sigma_calibration": sigma_calibration(z_scores)}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        plot_scatter(scatter, model.config.names, out / "scatter.png")
    return summary


def plot_scatter(scatter: dict, names: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = list(scatter)
    fig, axes = plt.subplots(len(levels), len(names), figsize=(3.2 * len(names), 3 * len(levels)), squeeze=False)
    for i, level in enumerate(levels):
        pred, true = scatter[level]
        for k, name in enumerate(names):
            ax = axes[i, k]
            ax.plot(true[:, k], pred[:, k], ".", ms=2, alpha=0.4)
            lo, hi = true[:, k].min(), true[:, k].max()
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.set_title(f"{name} — {level}", fontsize=8)
            ax.set_xlabel("true (waves RMS)", fontsize=7)
            ax.set_ylabel("predicted", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
