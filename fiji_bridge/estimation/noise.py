"""Camera noise of an image, estimated from the image alone, and the restoration settings it calls for.

Microscope cameras record ``y = g·Poisson(photons) + offset + read noise``: the variance grows linearly with
the mean, ``var = g·(mean − offset) + σ_r²``. `estimate_noise` fits that line to local statistics (a
Laplacian-like residual whose expected square is proportional to the noise variance, binned by the local
mean, robust medians so that edges do not count as noise; Foi et al. 2008 use the same principle), and
`photon_level` turns the image's bright end into photons. `auto_settings` maps the photon level to the
iteration count and TV weight measured best by ``benchmarks/calibrate_iterations.py`` (a noisy image is
best restored with few RL iterations; 30 iterations at 300 photons amplify noise by 1–3 dB).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: E[d²] / σ² for the residual d = y − mean of its 4 neighbours of white noise: 1 + 4/16.
_RESIDUAL_GAIN = 1.25
#: Median of χ²₁ (median of d² over its variance for Gaussian d).
_CHI2_MEDIAN = 0.4549


@dataclass(frozen=True)
class NoiseModel:
    """``var(y) = gain · (y − offset) + read_variance`` in the image's grey values."""

    gain: float            # grey values per photon
    offset: float          # grey value of zero photons (the line's intercept with zero variance from light)
    read_variance: float   # variance at zero photons (grey values²)

    def photons(self, grey):
        """Photon counts of grey values."""
        return (np.asarray(grey, np.float64) - self.offset) / self.gain


def estimate_noise(image: np.ndarray, bins: int = 24, min_count: int = 50) -> NoiseModel:
    """Fit ``var = gain·mean + c`` to a 2-D image's local statistics.

    Parameters
    ----------
    image : ndarray (H, W)
        Raw grey values (not background-subtracted).
    bins : int
        Number of local-mean quantile bins.
    min_count : int
        Fewest pixels for a bin to count.

    Returns
    -------
    NoiseModel. The offset is taken as the image's 0.1 % quantile when the fitted line has no positive
    slope (pure Gaussian noise): the gain is then set so that the darkest pixels hold ~0 photons.
    """
    y = np.asarray(image, np.float64)
    if y.ndim != 2 or min(y.shape) < 8:
        raise ValueError(f"image: noise estimation needs a 2-D image of at least 8×8 pixels, got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("image: contains NaN or infinite values")
    neighbours = ndimage.convolve(y, np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]]) / 4.0, mode="reflect")
    d2 = ((y - neighbours) ** 2)[1:-1, 1:-1] / (_RESIDUAL_GAIN * _CHI2_MEDIAN)
    local = ndimage.uniform_filter(y, 3, mode="reflect")[1:-1, 1:-1]
    # bins of equal pixel count over the local mean; the median of each bin is robust to the edges and
    # structure that also raise the residual
    edges = np.quantile(local, np.linspace(0, 1, bins + 1))
    means, variances = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (local >= lo) & (local <= hi)
        if sel.sum() >= min_count and hi > lo:
            means.append(float(np.median(local[sel])))
            variances.append(float(np.median(d2[sel])))
    means, variances = np.asarray(means), np.asarray(variances)
    floor = float(np.quantile(y, 0.001))
    if len(means) < 3:
        return NoiseModel(gain=max(float(np.median(variances)) if len(variances) else 1.0, 1e-30) /
                          max(float(y.mean()) - floor, 1e-30), offset=floor, read_variance=0.0)
    slope, intercept = theil_sen(means, variances)      # robust line through the bins
    if slope <= 0:
        # no signal-dependent noise: treat it as Poisson at the level that its variance implies above the floor
        var = max(float(np.median(variances)), 1e-30)
        gain = var / max(float(np.median(means)) - floor, 1e-30)
        return NoiseModel(gain=gain, offset=floor, read_variance=0.0)
    # var = slope·(mean − offset): the zero-light level is where the line meets zero variance (read noise small
    # against shot noise), never above the darkest pixels
    offset = min(-intercept / slope, floor)
    return NoiseModel(gain=slope, offset=offset, read_variance=max(intercept + slope * offset, 0.0))


def theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Theil–Sen line ``y ≈ slope·x + intercept``: the median of the slopes of all pairs with distinct ``x``, and
    the intercept ``median(y) − slope·median(x)`` — what ``scipy.stats.theilslopes`` returns (tested against
    it). Written out because importing ``scipy.stats`` costs 40 MB of resident memory in every run for a
    line through a dozen points (issue 15's memory target)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    i, j = np.triu_indices(len(x), k=1)
    dx = x[j] - x[i]
    keep = dx != 0
    slope = float(np.median((y[j] - y[i])[keep] / dx[keep]))
    return slope, float(np.median(y) - slope * np.median(x))


def photon_level(image: np.ndarray, noise: NoiseModel | None = None) -> float:
    """Peak photon count of the image's signal: the 99.5 % quantile in photons (robust to hot pixels)."""
    noise = noise or estimate_noise(image)
    photons = float(noise.photons(np.quantile(np.asarray(image, np.float64), 0.995)))
    return photons if np.isfinite(photons) and photons > 1.0 else 1.0


@dataclass(frozen=True)
class RestorationRule:
    """Iterations and TV weight as functions of the estimated peak photon level (power laws, clipped).

    Defaults: ``benchmarks/results/calibrate_iterations.json`` (oracle SV TV-RL on five specimens, 100 to
    10 000 photons; TV fitted on one seed, tested on another). On the test seed the rule is within 0.07 dB of
    the best TV at the same iteration count and beats the old fixed 30 iterations / TV 0.002 by +1.1, +0.6,
    +0.2, +0.1 and +0.3 dB at 100, 300, 1000, 3000 and 10 000 photons. Iterations grow slowly with photons
    (a design choice: with TV matched to the noise, iterations beyond 30 pay 0.35–0.4 dB at ≥ 3000 photons and
    < 0.2 dB at ≤ 300)."""

    iterations_at_1000: float = 30.0
    iterations_exponent: float = 0.3
    iterations_range: tuple[int, int] = (15, 60)
    tv_at_1000: float = 0.0055
    tv_exponent: float = -0.436
    tv_range: tuple[float, float] = (0.001, 0.03)

    def iterations(self, photons: float) -> int:
        n = self.iterations_at_1000 * (photons / 1000.0) ** self.iterations_exponent
        return int(np.clip(round(n), *self.iterations_range))

    def tv(self, photons: float) -> float:
        return float(np.clip(self.tv_at_1000 * (photons / 1000.0) ** self.tv_exponent, *self.tv_range))


#: The rule SemiBlind uses for ``iterations="auto"`` / ``tv="auto"`` (measured; see the module docstring).
DEFAULT_RULE = RestorationRule()


def auto_settings(image: np.ndarray, rule: RestorationRule = DEFAULT_RULE) -> dict:
    """Iterations and TV weight for ``image`` from its estimated photon level: ``{"iterations", "tv",
    "photons", "noise"}``."""
    noise = estimate_noise(image)
    photons = photon_level(image, noise)
    return {"iterations": rule.iterations(photons), "tv": rule.tv(photons), "photons": photons,
            "noise": {"gain": noise.gain, "offset": noise.offset, "read_variance": noise.read_variance}}
