"""Total-variation regularised Richardson–Lucy deconvolution with a spatially-variant PSF grid."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fiji_bridge.restoration.backend import array_module
from fiji_bridge.restoration.sv_convolution import SVConvolution, as_psf_grid, check_image, node_centres, scaled, unit_scale

#: Largest TV weight: with unit-normalised gradients |div| <= 4, so 1 - tv*div stays >= 0.2.
TV_MAX = 0.2
#: Floor of ``Hᵀ1`` (unitless: the fraction of an object pixel's light that reaches observed pixels).
#: Only object pixels of the 'extend' margin whose light barely reaches the image fall below it; there
#: float32 FFT rounding (~1e-7 of the largest value) would dominate ``Hᵀ1``.
NORM_FLOOR = 1e-4


def tv_divergence(x, xp, eps):
    """``div(∇x / sqrt(|∇x|² + eps²))``: forward differences for ∇, backward for div (Neumann edges).

    ``eps`` (scalar or array like ``x``) is the Huber threshold below which gradients are smoothed
    quadratically instead of by TV.
    """
    gy = xp.zeros_like(x)
    gx = xp.zeros_like(x)
    gy[:-1] = x[1:] - x[:-1]
    gx[:, :-1] = x[:, 1:] - x[:, :-1]
    norm = xp.sqrt(gy * gy + gx * gx + eps * eps)
    gy /= norm
    gx /= norm
    div = gy.copy()
    div[1:] -= gy[:-1]
    div[:, 0] += gx[:, 0]
    div[:, 1:] += gx[:, 1:] - gx[:, :-1]
    return div


class _TVBands:
    """The TV-RL update ``x *= max(update / max(1 - tv·div(∇x/|∇x|_eps), 0.2), 0)`` with ``eps = 8·tv·x +
    floor``, in bands of rows on buffers of a few hundred kB (cache-resident, no image-sized temporaries):
    the same arithmetic, in the same order, as `tv_divergence` on the whole image."""

    def __init__(self, xp, shape: tuple[int, int], rows: int | None = None):
        self.xp, self.shape = xp, shape
        height, width = shape
        self.rows = int(rows or max(8, min(height, (1 << 16) // max(width, 1))))
        n = self.rows + 2
        self.xb, self.gy, self.gx, self.nrm, self.tmp = (xp.empty((n, width), xp.float32) for _ in range(5))
        self.div = xp.empty((self.rows, width), xp.float32)
        self.halo = xp.empty((width,), xp.float32)

    def update(self, x, update, tv: float, floor) -> None:
        xp, (height, width) = self.xp, self.shape
        tv32, eps_scale = xp.float32(tv), xp.float32(8 * tv)
        for r0 in range(0, height, self.rows):
            r1 = min(r0 + self.rows, height)
            lo, hi = max(r0 - 1, 0), min(r1 + 1, height)
            m, off, nb = hi - lo, r0 - lo, r1 - r0
            xb, gy, gx, nrm, tmp = (a[:m] for a in (self.xb, self.gy, self.gx, self.nrm, self.tmp))
            if off:
                xb[0] = self.halo                        # row r0 - 1 as it was before its update
            xb[off:] = x[r0:hi]
            xp.subtract(xb[1:], xb[:-1], out=gy[:-1])   # forward differences, Neumann edges
            gy[-1] = 0
            xp.subtract(xb[:, 1:], xb[:, :-1], out=gx[:, :-1])
            gx[:, -1] = 0
            xp.multiply(gy, gy, out=nrm)                 # sqrt(gy² + gx² + eps²)
            xp.multiply(gx, gx, out=tmp)
            nrm += tmp
            xp.multiply(xb, eps_scale, out=tmp)
            tmp += floor
            tmp *= tmp
            nrm += tmp
            xp.sqrt(nrm, out=nrm)
            gy /= nrm
            gx /= nrm
            div = self.div[:nb]                          # backward differences
            if off:
                xp.subtract(gy[off:off + nb], gy[:nb], out=div)
            else:
                div[0] = gy[0]
                xp.subtract(gy[1:nb], gy[:nb - 1], out=div[1:])
            gxb = gx[off:off + nb]
            div[:, 0] += gxb[:, 0]
            t = tmp[:nb, :width - 1]
            xp.subtract(gxb[:, 1:], gxb[:, :-1], out=t)
            div[:, 1:] += t
            div *= tv32                                  # max(1 - tv·div, 0.2)
            xp.subtract(xp.float32(1), div, out=div)
            xp.maximum(div, xp.float32(0.2), out=div)
            if r1 < height:
                self.halo[...] = x[r1 - 1]
            u = update[r0:r1]
            u /= div
            xp.maximum(u, 0, out=u)                      # clamp what FFT rounding makes negative
            x[r0:r1] *= u


def richardson_lucy(image, psfs, iterations: int = 30, tv: float = 0.002, *, boundary: str = "extend",
                    eps: float = 1e-6, centres: tuple[np.ndarray, np.ndarray] | None = None,
                    callback: Callable[[int, object], None] | None = None):
    """Richardson–Lucy deconvolution with total-variation regularisation (Dey et al. 2006).

    ``x ← x · Hᵀ(y / Hx) / (Hᵀ1 · (1 − tv · div(∇x/|∇x|)))`` with ``H`` the spatially-variant blur of
    `fiji_bridge.restoration.sv_convolution`. One PSF gives classic shift-invariant RL.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Blurred image (NumPy on the CPU or CuPy on the GPU; the result has the same type). Negative
        values (e.g. after background subtraction) are handled by shifting the data to be
        non-negative and shifting the result back.
    psfs : ndarray, shape (h, w) or (gy, gx, h, w)
        One PSF or a grid of PSFs centred on a gy x gx partition of the image.
    iterations : int
        Number of RL iterations (>= 1).
    tv : float
        TV regularisation weight λ in [0, 0.2]; 0 is plain RL. 0.002 suits photon counts of ~100–1000.
    boundary : {'extend', 'zero'}
        'extend' estimates the object on a field extended by the PSF margin and fits only the observed
        pixels (Bertero & Boccacci 2005), so image edges do not ring; 'zero' treats the outside as
        black (as `skimage.restoration.richardson_lucy`).
    eps : float
        Relative floor (× image maximum) protecting the division by the blurred estimate, and the
        smallest Huber threshold of the TV term (× image maximum).
    centres : (ndarray, ndarray), optional
        Row and column pixel coordinates of the PSF grid nodes (may lie outside the image, e.g. for a
        tile of a larger image); default: centres of a regular gy x gx partition of ``image``.
    callback : callable, optional
        ``callback(iteration, estimate)`` after each iteration (progress reporting). A callback with the
        attribute ``wants_estimate = False`` gets ``None`` instead of the estimate (saves a copy of the
        image per iteration).

    Returns
    -------
    ndarray, float32, shape (H, W): the restored image, finite and >= min(0, image.min()).

    Notes
    -----
    The result scales with the input: ``richardson_lucy(k·y) == k·richardson_lucy(y)`` (to float32
    rounding, exactly for powers of two). The image is divided by a power of two near its maximum
    (computed in float64) before the iterations and multiplied back after, and every floor carries the
    unit of what it protects: ``Hᵀ1`` is unitless (`NORM_FLOOR`), the blurred estimate and the TV
    threshold scale with the image (``eps`` × its maximum). Limits of float32: detail fainter than
    ``eps`` × the image maximum is not restored, inputs whose values are float32 subnormals (< 1.2e-38)
    lose precision, and restored values beyond the float32 range (3.4e38) saturate at its maximum.
    """
    xp = array_module(image)
    y = check_image(image)
    if isinstance(iterations, (bool, np.bool_)) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
    if not (0.0 <= float(tv) <= TV_MAX):
        raise ValueError(f"tv must be in [0, {TV_MAX}], got {tv!r}")
    if boundary not in ("extend", "zero"):
        raise ValueError(f"boundary must be 'extend' or 'zero', got {boundary!r}")
    psfs = as_psf_grid(xp.asarray(psfs, dtype=xp.float32), y.shape)
    psfs = psfs / psfs.sum(axis=(-2, -1), keepdims=True)
    gy, gx, h, w = psfs.shape

    # work on y · 2^-e (largest magnitude in [0.5, 1)): no float32 overflow or underflow whatever the
    # brightness of the input, and an exact round trip
    e = unit_scale(xp, y)
    if e == 0 and not bool(xp.any(y)):  # all-zero image: nothing to restore
        return xp.zeros(image.shape, xp.float32)
    # a float32 copy made by check_image (integer input) is ours to scale in place: one image-sized array less
    y = scaled(xp, y, -e, out=y if y is not image else None)
    offset = float(y.min())
    shift = -offset if offset < 0 else 0.0
    y = y + xp.float32(shift) if shift else y
    scale = float(y.max())
    if scale <= 0:  # constant image shifted to zero: nothing to restore
        return scaled(xp, xp.zeros(image.shape, xp.float32) - xp.float32(shift), e)
    floor = xp.float32(eps * scale)                     # image units: protects Hx and the TV threshold

    # 'extend': the object is estimated on a field larger than the image by the PSF margin, and only
    # observed pixels enter the data term (Bertero & Boccacci 2005): no ringing from a hard edge.
    py, px = ((h - 1) // 2, (w - 1) // 2) if boundary == "extend" else (0, 0)
    cy, cx = node_centres(image.shape[0], gy), node_centres(image.shape[1], gx)
    if centres is not None:
        cy, cx = (np.asarray(c, dtype=np.float64) for c in centres)
        if cy.shape != (gy,) or cx.shape != (gx,) or np.any(np.diff(cy) <= 0) or np.any(np.diff(cx) <= 0):
            raise ValueError(f"centres must be increasing coordinates of length {gy} and {gx}")
    observed = (slice(py, py + y.shape[0]), slice(px, px + y.shape[1]))
    op = SVConvolution(psfs, (y.shape[0] + 2 * py, y.shape[1] + 2 * px), centres=(cy + py, cx + px),
                       observed=observed)
    # 1 / Hᵀ1 (unitless, computed once) is folded into the adjoint's blend: update = Hᵀ(ratio) / Hᵀ1
    op.observed_buffer()[...] = 1
    inv_norm = xp.maximum(op.adjoint_buffer(), xp.float32(NORM_FLOOR))
    xp.divide(xp.float32(1), inv_norm, out=inv_norm)
    x = xp.full(op.shape, float(y.mean()), xp.float32)
    bands = _TVBands(xp, op.shape) if tv > 0 else None
    for it in range(iterations):
        ratio = op.forward_buffer(x)                     # operator buffers, updated in place: no allocation
        xp.maximum(ratio, floor, out=ratio)
        xp.divide(y, ratio, out=ratio)
        update = op.adjoint_buffer(inv_norm)
        if bands is not None:
            # For |∇x| << eps the TV factor is an explicit diffusion step of size x·tv/eps, stable only
            # for x·tv/eps <= 1/4: a Huber threshold eps = 8·tv·x keeps flat areas from checkerboarding.
            # 1 - tv*div >= 1 - 4 tv >= 0.2 by construction; the clamp only guards rounding.
            bands.update(x, update, tv, floor)
        else:
            # Hᵀ of a non-negative ratio is non-negative: clamp what FFT rounding makes negative
            x *= xp.maximum(update, 0, out=update)
        if callback is not None:
            if not getattr(callback, "wants_estimate", True):    # progress only: no image-sized copy
                callback(it + 1, None)
            else:
                callback(it + 1, scaled(xp, x[observed] - xp.float32(shift), e) if (shift or e) else x[observed])
    del op, inv_norm, bands, y                           # free the buffers before the result is made
    if shift:
        x -= xp.float32(shift)
    return xp.ascontiguousarray(scaled(xp, x, e, out=x)[observed])   # scaled in place: one copy at the end
