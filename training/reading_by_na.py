"""What a context model reads for known defocus at each NA/n (``python -m training reading``): a diagnostic.

A focal shift beyond the paraxial regime is not a pure Z4 wavefront: its PSF depends on NA/n, which the network
is not told. Trained over NA/n 0.25-0.95 with one label per depth (`fiji_bridge.optics.defocus_to_z`), it reads
large blur as a compromise over NA/n. This measures how much: uniformly blurred images of procedural specimens
(seeds apart from the benchmarks'), blurred by the training's PSF model (the apodised focal-shift pupil of
`psf_batch`) at the model's sampling, Poisson noise, `estimate_psf_map` of the network alone (no near-focus
model), the median raw reading of the informative patches, then the median over specimens.

Each NA/n's readings above `IDENTITY_BELOW` are, to within ~0.03 waves, the NA/n-average's times one gain
(`gains`): v2.1 measured 1.08 at NA/n 0.25, 0.96 at 0.75 and 0.81 at 0.95 (2026-12-07,
`benchmarks/results/reading_by_na.json`). Dividing that gain out
at run time (the image's NA/n is known) was measured and not shipped: it changed the 1024² envelope
restorations by -0.45 to +0.08 dB at NA 0.75 and by -0.2 to +3.1 dB at NA 1.4 oil, and made two photographs'
maps worse there (README, "Training the models"). Telling the network NA/n is the fix this points to.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from fiji_bridge.estimation.model import PSFModel
from fiji_bridge.estimation.psf_map import estimate_psf_map, psf_size_for
from fiji_bridge.optics import Optics, defocus_to_z
from fiji_bridge.optics.psf import psf_batch
from fiji_bridge.simulation.simulate import blur_beyond_field
from fiji_bridge.simulation.specimens import GENERATORS

#: NA/n of the table's rows: the training's focal-shift range (0.25-0.95).
RELATIVE_NA = (0.25, 0.45, 0.65, 0.75, 0.85, 0.9, 0.95)
#: Defocus of its columns (waves RMS).
COEFFICIENTS = (0.5, 0.8, 1.0, 1.2, 1.4, 1.55)
#: Below this reading (waves RMS) NA/n moves readings by under 0.03 waves; the gains are fitted above it.
IDENTITY_BELOW = 0.6
SPECIMENS = ("cells", "filaments", "membranes") * 2
SIZE = 512
PHOTONS = 3000.0
#: Seeds of the specimens: apart from the benchmarks' (0, 1, ...).
SEED = 7100


def network_alone(model: PSFModel) -> PSFModel:
    """``model`` without its near-focus companion."""
    net = PSFModel(model.path)
    net.config = dataclasses.replace(model.config, near_focus_model=None, near_focus_blend=None)
    return net


def median_reading(net: PSFModel, relative_na: float, coefficient: float, specimen: str, seed: int) -> float:
    """Median defocus reading (waves RMS) of ``net`` on a ``specimen`` blurred uniformly by ``coefficient``."""
    sampling = net.config.sampling
    wavelength = net.config.optics.wavelength
    optics = Optics(na=relative_na, wavelength=wavelength, pixel_size=sampling * wavelength / relative_na, n=1.0)
    size = psf_size_for(np.array([[[coefficient * 1.3]]]), ["defocus"], sampling, SIZE)
    psf = psf_batch(optics, [4], np.zeros((1, 1)), size, focal_shift=np.array([defocus_to_z(coefficient, optics)]))[0]
    rng = np.random.default_rng(seed)
    truth = (GENERATORS[specimen]((SIZE, SIZE), rng) * 0.95 + 0.05) * PHOTONS
    image = rng.poisson(np.clip(blur_beyond_field(truth, psf / psf.sum()), 0, None)).astype(np.float32)
    m = estimate_psf_map(image, net, optics=optics)
    return float(np.median(m.raw[0][m.informative]))


def gains(relative_na, coefficients, reading, identity_below: float = IDENTITY_BELOW) -> np.ndarray:
    """Per NA/n row, the gain of its readings above ``identity_below`` against the NA/n-average's (the rows
    averaged uniformly over their span of NA/n, as the training draws it), least squares through that point;
    only columns whose true defocus exceeds ``identity_below`` count."""
    na, r = np.asarray(relative_na, float), np.asarray(reading, float)
    keep = np.asarray(coefficients, float) > identity_below
    widths = np.diff(na)
    average = ((r[1:] + r[:-1]) / 2 * widths[:, None]).sum(0) / widths.sum()
    x, t = r[:, keep] - identity_below, average[keep] - identity_below
    return (x * t).sum(1) / (t * t).sum()


def measure(model: PSFModel, relative_na=RELATIVE_NA, coefficients=COEFFICIENTS, specimens=SPECIMENS,
            log=print) -> dict:
    net = network_alone(model)
    table = []
    for na in relative_na:
        row = [float(np.median([median_reading(net, na, c, s, SEED + k) for k, s in enumerate(specimens)]))
               for c in coefficients]
        log(f"NA/n {na}: " + "  ".join(f"{c:g} -> {r:.3f}" for c, r in zip(coefficients, row)))
        table.append([round(r, 4) for r in row])
    return {"model": Path(model.path).name, "model_version": model.config.version,
            "protocol": f"{SIZE}² uniform blur of {', '.join(sorted(set(specimens)))} ({len(specimens)} images), "
                        f"focal-shift pupil (training PSF model), {PHOTONS:g} photons; median of the informative "
                        f"patches' raw defocus, median over images",
            "relative_na": list(relative_na), "coefficient": list(coefficients), "reading": table,
            "gain_above": IDENTITY_BELOW,
            "gain": [round(float(g), 4) for g in gains(relative_na, coefficients, table)]}


def main(model_path: str | Path | None, output: str | Path) -> dict:
    model = PSFModel(model_path)
    if model.config.context_factor == 1 or model.config.sampling_range is None:
        raise ValueError(f"model {model.path.name}: the table is for context models, which read a range of "
                         f"samplings")
    report = measure(model)
    from fiji_bridge.io.atomic import write_text
    write_text(output, json.dumps(report, indent=1) + "\n")
    return report
