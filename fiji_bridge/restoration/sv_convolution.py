"""Spatially-variant convolution on a grid of PSFs blended by bilinear weights, and its adjoint.

``H x = Σ_i h_i * (w_i · x)`` and ``Hᵀ y = Σ_i w_i · (flip(h_i) * y)`` (Nagy & O'Leary 1998,
Hirsch et al. 2010), where ``w_i`` are tent (bilinear interpolation) weights around the grid nodes
that sum to one at every pixel. The image is cut into cells between the nodes; each cell's terms are
computed with local FFTs over the cell plus the PSF margin, on fixed buffers, so an iteration costs a small
multiple of one full-image FFT convolution whatever the grid size. The weights are separable
(``w_i(y, x) = wy(y)·wx(x)``), and a 1-D FFT along one axis commutes with a weight that varies along the
other only: a cell of 2 x 2 nodes takes 2 row FFTs and 4 column FFTs (plus one 2-D FFT) each way rather
than five 2-D FFTs. Convolution is linear (zero extension outside the array), never circular.
"""
from __future__ import annotations

import numpy as np

from fiji_bridge.restoration.backend import RealFFT2, SeparableFFT, array_module, fft_module, fft_workers
from fiji_bridge.validation import real_image_dtype


def fft_length(n: int, min_power_of_two: int = 8) -> int:
    """Smallest ``2^a 3^b 5^c >= n`` with ``2^a >= min_power_of_two``: pocketfft and cuFFT are fastest on such
    even, 5-smooth lengths (``scipy.fft.next_fast_len`` may return factors of 7 and 11, measured slower)."""
    best = max(8, min_power_of_two) * n
    p2 = min_power_of_two
    while p2 < 2 * n:
        p3 = p2
        while p3 < 2 * n:
            p5 = p3
            while p5 < n:
                p5 *= 5
            best = min(best, p5)
            p3 *= 3
        p2 *= 2
    return best


def node_centres(length: int, count: int) -> np.ndarray:
    """Pixel coordinates of ``count`` grid nodes at the centres of equal cells over ``length`` pixels."""
    return (np.arange(count) + 0.5) * length / count - 0.5


def tent_weights(length: int, centres: np.ndarray) -> np.ndarray:
    """1-D bilinear interpolation weights, shape (len(centres), length).

    Weight ``k`` is 1 at node ``k``, falls linearly to 0 at the neighbouring nodes and stays flat
    beyond the first/last node, so the weights sum to 1 at every pixel.
    """
    pos = np.arange(length, dtype=np.float64)
    eye = np.eye(len(centres))
    return np.stack([np.interp(pos, centres, eye[k]) for k in range(len(centres))])


def as_psf_grid(psfs, image_shape: tuple[int, int]) -> np.ndarray:
    """Validate ``psfs`` (one 2-D PSF or a (gy, gx, h, w) grid) and return a (gy, gx, h, w) array."""
    xp = array_module(psfs)
    psfs = xp.asarray(psfs)
    if psfs.ndim == 2:
        psfs = psfs[None, None]
    if psfs.ndim != 4:
        raise ValueError(f"psfs must be one 2-D PSF or a (gy, gx, h, w) grid, got shape {psfs.shape}")
    gy, gx, h, w = psfs.shape
    if min(psfs.shape) < 1:
        raise ValueError(f"psfs: empty PSF grid of shape {psfs.shape}")
    if h > image_shape[0] or w > image_shape[1]:
        raise ValueError(f"psfs: PSF of {h}x{w} pixels is larger than the image {image_shape[0]}x{image_shape[1]}")
    if gy > image_shape[0] // 2 or gx > image_shape[1] // 2:
        raise ValueError(f"psfs: a {gy}x{gx} PSF grid does not fit an image of {image_shape[0]}x{image_shape[1]} "
                         "pixels (each grid cell needs at least 2 pixels)")
    if not bool(xp.all(xp.isfinite(psfs))):
        raise ValueError("psfs: PSFs contain NaN or inf")
    if bool(xp.any(psfs < 0)):
        raise ValueError("psfs: PSFs must be non-negative")
    if bool(xp.any(psfs.sum(axis=(-2, -1)) <= 0)):
        raise ValueError("psfs: every PSF must have a positive sum")
    return psfs


def axis_cells(length: int, centres: np.ndarray) -> list[tuple[int, int, tuple[int, ...]]]:
    """Split ``range(length)`` at the node centres: ``(start, stop, nodes)`` per non-empty interval.

    Inside an interval only the two bracketing nodes (one beyond the first/last node) have non-zero
    tent weight, so every pixel is touched by at most 2 x 2 PSFs.
    """
    g = len(centres)
    bounds = [0, *np.clip(np.floor(centres).astype(int) + 1, 0, length), length]
    return [(int(bounds[j]), int(bounds[j + 1]), tuple(k for k in (j - 1, j) if 0 <= k < g))
            for j in range(g + 1) if bounds[j + 1] > bounds[j]]


#: Bytes of one chunk's buffer for cells under one PSF: they are transformed a few at a time on fixed buffers
#: that stay in the CPU caches (batched FFTs over many cells were measured 2-3x slower per point), and the
#: operator's scratch memory does not grow with the image. Cells under blended PSFs go one at a time.
CHUNK_BYTES = 1 << 20
#: Largest size of the PSF spectra (with their conjugates) for which the conjugates are stored.
CONJ_BYTES = 32 << 20


def _cells(length: int, centres: np.ndarray) -> list[tuple[int, int, tuple[int, ...]]]:
    """`axis_cells`, but one interval for a single node (its weight is 1 everywhere: no split needed)."""
    return [(0, length, (0,))] if len(centres) == 1 else axis_cells(length, centres)


def _window(buf, extents: list, slot: int, hh: int, ww: int):
    """``buf[slot, :hh, :ww]``, after zeroing what an earlier, larger window left beyond it (the rest of
    each slot stays zero: the FFT's zero padding)."""
    oh, ow = extents[slot]
    if oh > hh:
        buf[slot, hh:oh, :ow] = 0
    if ow > ww:
        buf[slot, :min(hh, oh), ww:ow] = 0
    extents[slot] = (hh, ww)
    return buf[slot, :hh, :ww]


class _CellGroup:
    """Cells that share an FFT shape and their number of nodes along each axis (``ny`` x ``nx``, ``k`` terms)."""

    def __init__(self, fft_shape: tuple[int, int], ny: int, nx: int):
        self.fft_shape, self.ny, self.nx, self.k = fft_shape, ny, nx, ny * nx
        self.cells: list[tuple[int, int, int, int]] = []
        self.nodes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []   # (row nodes, column nodes) per cell


class SVConvolution:
    """Linear spatially-variant blur operator on arrays of one shape.

    The image is split into cells between neighbouring grid nodes; in a cell the blur is the sum of at
    most four PSFs applied to the bilinearly weighted cell. Forward: the spectra of the weighted cell (row
    FFTs of the column-weighted cell, row weights, column FFTs: the separable scheme), products with the
    PSF spectra summed in the frequency domain, one inverse 2-D FFT per cell, overlap-add. Adjoint: one 2-D
    FFT per cell (with its PSF margin), products, column inverse FFTs, row weights summed, row inverse FFTs,
    column weights summed. Cells under one PSF take plain 2-D FFTs, a few at a time (`CHUNK_BYTES`). All
    transforms run on fixed buffers (FFTW plans when pyfftw is installed, see
    `fiji_bridge.restoration.backend`); PSF spectra are kept once per node and FFT shape, and weights as their
    separable 1-D factors, so memory is a few image-sized arrays.

    Parameters
    ----------
    psfs : ndarray, shape (gy, gx, h, w) or (h, w)
        PSF grid (NumPy or CuPy; the operator works in that array module). PSF centres are at index
        ``((h - 1) // 2, (w - 1) // 2)`` as in ``scipy.signal.convolve(..., mode='same')``.
    shape : tuple of int
        Shape (H, W) of the arrays the operator acts on.
    centres : tuple of ndarray, optional
        Node coordinates (rows, cols) in pixels, increasing, possibly outside the array; default:
        centres of a regular gy x gx partition.
    observed : tuple of slice, optional
        Region of the blurred result that is observed: `forward` returns only this region and
        `adjoint` takes an array of its shape (zero elsewhere). Default: the whole array.
    """

    def __init__(self, psfs, shape: tuple[int, int], centres: tuple[np.ndarray, np.ndarray] | None = None,
                 observed: tuple[slice, slice] | None = None):
        self.xp = xp = array_module(psfs)
        fft = fft_module(xp)
        psfs = as_psf_grid(psfs, shape).astype(xp.float32)
        gy, gx, h, w = psfs.shape
        self.shape, self.psf_shape = tuple(shape), (h, w)
        cy, cx = centres if centres is not None else (node_centres(shape[0], gy), node_centres(shape[1], gx))
        cy, cx = np.asarray(cy, dtype=np.float64), np.asarray(cx, dtype=np.float64)
        wy = [xp.asarray(r[:, None], dtype=xp.float32) for r in tent_weights(shape[0], cy)]
        wx = [xp.asarray(r[None, :], dtype=xp.float32) for r in tent_weights(shape[1], cx)]
        ry, rx = observed if observed is not None else (slice(0, shape[0]), slice(0, shape[1]))
        oy, ox = (h - 1) // 2, (w - 1) // 2
        # One PSF over the whole array, observed only where its whole support lies inside the array (the
        # 'extend' boundary of RL): a circular convolution of the array's own size is then exact on the observed
        # pixels (what wraps around lands on unobserved ones), so the FFTs need not pad by the PSF again --
        # 2160² instead of 2304² for a 2048² image with a 63-px PSF.
        self._circular = (gy == gx == 1 and ry.start + oy >= h - 1 and ry.stop + oy <= shape[0]
                          and rx.start + ox >= w - 1 and rx.stop + ox <= shape[1])
        groups: dict[tuple[int, int, int], _CellGroup] = {}
        for a, b, ny in _cells(shape[0], cy):
            for c, d, nx in _cells(shape[1], cx):
                fft_shape = ((fft_length(b - a), fft_length(d - c)) if self._circular else
                             (fft_length(b - a + h - 1), fft_length(d - c + w - 1)))
                key = (*fft_shape, len(ny), len(nx))
                group = groups.setdefault(key, _CellGroup(fft_shape, len(ny), len(nx)))
                group.cells.append((a, b, c, d))
                group.nodes.append((ny, nx))
        self.groups = list(groups.values())
        flat = psfs.reshape(gy * gx, h, w)
        total = 0
        for g in self.groups:
            ly, lx = g.fft_shape
            nodes = sorted({i * gx + j for ny, nx in g.nodes for i in ny for j in nx})
            slot = {n: s for s, n in enumerate(nodes)}
            with fft_workers(xp):   # spectra once per node; 1/(Ly·Lx) folded in: the FFTs do not normalise
                spectra = fft.rfft2(flat[xp.asarray(nodes)], s=g.fft_shape, axes=(-2, -1))
            spectra *= xp.float32(1.0 / (ly * lx))
            g.spectra = spectra.astype(xp.complex64, copy=False)
            g.conj = xp.empty(spectra.shape[1:], xp.complex64)
            total += g.spectra.nbytes
            g.slots = [[slot[i * gx + j] for i in ny for j in nx] for ny, nx in g.nodes]
            # weight factors over each cell (None where 1 throughout: nothing to multiply)
            g.weights = [([_factor(wy[i][a:b]) for i in ny], [_factor(wx[j][:, c:d]) for j in nx])
                         for (ny, nx), (a, b, c, d) in zip(g.nodes, g.cells)]
            if g.k == 1:        # one PSF: 2-D FFTs of a few cells at a time, terms and cells on the same buffers
                g.chunk = int(min(len(g.cells), max(1, CHUNK_BYTES // (ly * lx * 4))))
                g.cells_fft = RealFFT2(xp, g.chunk, g.fft_shape)
                g.extent_cells = [(0, 0)] * g.chunk
            else:               # blended PSFs: the separable scheme, a cell at a time (`_forward_blend`)
                g.cells_fft = RealFFT2(xp, 1, g.fft_shape)
                g.extent_cells = [(0, 0)]
                g.axes = SeparableFFT(xp, g.fft_shape, max(b - a for a, b, _, _ in g.cells), g.nx, g.k)
                g.extent_rows = [(0, 0)] * g.nx
        # conjugate spectra kept too while they are small (saves a pass per adjoint term); above
        # `CONJ_BYTES` (e.g. the pipeline's 16 x 16 grid at 2048²) the adjoint conjugates term by term
        for g in self.groups:
            g.spectra_conj = g.spectra.conj() if 2 * total <= CONJ_BYTES else None
        # observed region in the coordinates of the full linear-convolution result
        self._out = (slice(oy + ry.start, oy + ry.stop), slice(ox + rx.start, ox + rx.stop))
        self._acc = xp.zeros(self._padded(), xp.float32)      # forward result / adjoint input (padded)
        g0 = self.groups[0]
        self._single = len(self.groups) == 1 and len(g0.cells) == 1
        if self._single and g0.cells_fft.out is not None:
            # one cell (one PSF): the inverse FFT's fixed output is the forward result, no copy
            self._acc = g0.cells_fft.out[0, :self._padded()[0], :self._padded()[1]]
        self._adj = xp.empty(self.shape, xp.float32)          # adjoint result

    def _padded(self) -> tuple[int, int]:
        """Shape of the forward result buffer: the full linear convolution, or (circular case) what of it the
        FFT holds; every slice of it below is clipped to that shape alike."""
        full = (self.shape[0] + self.psf_shape[0] - 1, self.shape[1] + self.psf_shape[1] - 1)
        if self._circular:
            return min(full[0], self.groups[0].fft_shape[0]), min(full[1], self.groups[0].fft_shape[1])
        return full

    @property
    def fft_backend(self) -> str:
        """'fftw', 'pocketfft' or 'cufft'."""
        return self.groups[0].cells_fft.backend

    def forward(self, x):
        """``H x``: blur ``x`` (shape ``self.shape``); returns the observed region (a new array)."""
        return self.forward_buffer(x).copy()

    def adjoint(self, y):
        """``Hᵀ y``: correlate ``y`` (observed shape) with each node's PSF, blend with the node weights."""
        self._acc[self._out] = y
        return self.adjoint_buffer().copy()

    def observed_buffer(self):
        """The observed region of the operator's padded buffer: what `forward_buffer` returns and
        `adjoint_buffer` transforms (fill it to take the adjoint of other data)."""
        return self._acc[self._out]

    def forward_buffer(self, x):
        """``H x`` in the operator's own buffer: returns a view of its observed region, which `adjoint_buffer`
        takes as its input. Valid until the next call; callers may overwrite it (e.g. with the RL ratio)."""
        if not self._single:
            self._acc[...] = 0
        for g in self.groups:
            if g.k == 1:
                self._forward_cells(g, x)
            else:
                for i in range(len(g.cells)):
                    self._forward_blend(g, i, x)
        return self._acc[self._out]

    def adjoint_buffer(self, scale=None):
        """``Hᵀ`` of the observed view returned by `forward_buffer` (as it is now; zero outside it), times
        ``scale`` (shape ``self.shape``) if given, in the operator's own output buffer (valid until the next
        call)."""
        acc, (ry, rx) = self._acc, self._out
        acc[:ry.start] = 0
        acc[ry.stop:] = 0
        acc[:, :rx.start] = 0
        acc[:, rx.stop:] = 0
        for g in self.groups:
            if g.k == 1:
                self._adjoint_cells(g, scale)
            else:
                for i in range(len(g.cells)):
                    self._adjoint_blend(g, i, scale)
        return self._adj

    def _forward_cells(self, g: _CellGroup, x) -> None:
        """One PSF per cell: 2-D FFTs of a few cells at a time, products, inverse FFTs, overlap-add."""
        xp, (h, w), acc, fft = self.xp, self.psf_shape, self._acc, g.cells_fft
        for start in range(0, len(g.cells), g.chunk):
            cells = g.cells[start:start + g.chunk]
            for n, (a, b, c, d) in enumerate(cells):
                (wy,), (wx,) = g.weights[start + n]
                _product(xp, x[a:b, c:d], (wy, wx), _window(fft.real, g.extent_cells, n, b - a, d - c))
            z = fft.r2c()
            for n in range(len(cells)):
                xp.multiply(z[n], g.spectra[g.slots[start + n][0]], out=fft.spec[n])
            full = fft.c2r(fft.spec)
            for n, (a, b, c, d) in enumerate(cells):       # overlap-add
                if self._single:
                    if full is not fft.out:                 # FFTW writes the result into acc itself
                        acc[...] = full[n, :b - a + h - 1, :d - c + w - 1]
                else:
                    acc[a:b + h - 1, c:d + w - 1] += full[n, :b - a + h - 1, :d - c + w - 1]

    def _adjoint_cells(self, g: _CellGroup, scale) -> None:
        xp, (h, w), acc, out, fft = self.xp, self.psf_shape, self._acc, self._adj, g.cells_fft
        for start in range(0, len(g.cells), g.chunk):
            cells = g.cells[start:start + g.chunk]
            for n, (a, b, c, d) in enumerate(cells):
                _window(fft.real, g.extent_cells, n, b - a + h - 1, d - c + w - 1)[...] = acc[a:b + h - 1, c:d + w - 1]
            z = fft.r2c()
            for n in range(len(cells)):
                xp.multiply(z[n], self._conj(g, g.slots[start + n][0]), out=fft.spec[n])
            corr = fft.c2r(fft.spec)
            for n, (a, b, c, d) in enumerate(cells):
                (wy,), (wx,) = g.weights[start + n]
                _product(xp, corr[n, :b - a, :d - c], (wy, wx, None if scale is None else scale[a:b, c:d]),
                         out[a:b, c:d])

    def _conj(self, g: _CellGroup, s: int):
        """Conjugate spectrum of slot ``s`` (stored, or computed into a scratch buffer)."""
        return g.spectra_conj[s] if g.spectra_conj is not None else self.xp.conjugate(g.spectra[s], out=g.conj)

    # Blended PSFs, the separable scheme: the weights are products wy(row)·wx(col), and a row FFT commutes with
    # a weight that depends on the row only (a column FFT with one of the column only). So the forward takes the
    # row FFTs of the nx column-weighted cells (only the cell's rows: the rest is zero padding), weights them
    # by each wy, and column-transforms the ny·nx terms; the adjoint runs the same passes backwards. For 2 x 2
    # nodes a cell costs 2 row + 4 column passes (+ one 2-D FFT) each way instead of five 2-D FFTs (FFT time
    # measured 0.73x on 200² cells, 1 thread, FFTW).

    def _forward_blend(self, g: _CellGroup, i: int, x) -> None:
        xp, (h, w), fft, axes = self.xp, self.psf_shape, g.cells_fft, g.axes
        a, b, c, d = g.cells[i]
        hc, wc, nx, terms = b - a, d - c, g.nx, axes.terms
        wys, wxs = g.weights[i]
        xc = x[a:b, c:d]
        for j, wx in enumerate(wxs):
            _product(xp, xc, (wx,), _window(axes.rows, g.extent_rows, j, hc, wc))
        axes.rows_forward()
        terms[:, hc:] = 0                   # the columns' zero padding (every pass of the adjoint fills it)
        if g.ny == 2:
            for j in range(nx):             # terms (row node 0, col node j), (row node 1, col node j)
                # complex rows as float32 pairs: a real weight per row without numpy's mixed-type loop
                # (measured 1.5x slower)
                top, bottom = terms[j, :hc].view(xp.float32), terms[nx + j, :hc].view(xp.float32)
                _product(xp, top, (wys[1],), bottom)
                if wys[0] is not None:
                    top *= wys[0]
        axes.columns()
        slots, z = g.slots[i], fft.spec[0]
        xp.multiply(terms[0], g.spectra[slots[0]], out=z)
        for t in range(1, g.k):
            terms[t] *= g.spectra[slots[t]]
            z += terms[t]
        full = fft.c2r(fft.spec)[0]
        self._acc[a:b + h - 1, c:d + w - 1] += full[:hc + h - 1, :wc + w - 1]

    def _adjoint_blend(self, g: _CellGroup, i: int, scale) -> None:
        xp, (h, w), fft, axes = self.xp, self.psf_shape, g.cells_fft, g.axes
        a, b, c, d = g.cells[i]
        hc, wc, nx, terms = b - a, d - c, g.nx, axes.terms
        wys, wxs = g.weights[i]
        _window(fft.real, g.extent_cells, 0, hc + h - 1, wc + w - 1)[...] = self._acc[a:b + h - 1, c:d + w - 1]
        z = fft.r2c()[0]
        for t, s in enumerate(g.slots[i]):
            xp.multiply(z, self._conj(g, s), out=terms[t])
        axes.columns(inverse=True)
        if g.ny == 2:
            for j in range(nx):             # Σ over the row nodes of wy · term, before the row transforms
                top, bottom = terms[j, :hc].view(xp.float32), terms[nx + j, :hc].view(xp.float32)
                if wys[0] is not None:
                    top *= wys[0]
                if wys[1] is not None:
                    bottom *= wys[1]
                top += bottom
        rows = axes.rows_inverse()
        o, sc = self._adj[a:b, c:d], None if scale is None else scale[a:b, c:d]
        _product(xp, rows[0, :hc, :wc], (wxs[0], sc if nx == 1 else None), o)
        for j in range(1, nx):
            r = rows[j, :hc, :wc]
            if wxs[j] is not None:
                r *= wxs[j]
            o += r
        if nx > 1 and sc is not None:
            o *= sc


def _product(xp, src, factors, out) -> None:
    """``out[...] = src`` times each factor that is not None (one pass per factor, at least one)."""
    factors = [f for f in factors if f is not None]
    if not factors:
        out[...] = src
        return
    xp.multiply(src, factors[0], out=out)
    for f in factors[1:]:
        out *= f


def _factor(v):
    """A weight factor over a cell, or None where it is 1 throughout."""
    return None if bool((v == 1).all()) else v


def convolve_sv(image, psfs):
    """Blur ``image`` with a spatially-variant PSF grid (linear convolution, zero outside the image).

    Parameters
    ----------
    image : ndarray, shape (H, W)
        NumPy or CuPy image.
    psfs : ndarray, shape (h, w) or (gy, gx, h, w)
        One PSF (shift-invariant blur) or a grid of PSFs at the centres of a gy x gx partition of the
        image, blended with bilinear weights.

    Returns
    -------
    ndarray, float32, shape (H, W), same array module as ``image``; non-negative where ``image`` is
    (FFT rounding below zero is clamped), and ``convolve_sv(k·image) == k·convolve_sv(image)``: the
    image is divided by a power of two near its maximum (exact) so that no float32 overflow or
    underflow occurs inside the FFTs, and multiplied back.
    """
    xp = array_module(image)
    image = check_image(image)
    e = unit_scale(xp, image)
    out = SVConvolution(xp.asarray(psfs), image.shape).forward(scaled(xp, image, -e))
    if float(image.min()) >= 0:     # PSFs are non-negative: so is the blur of a non-negative image
        out = xp.maximum(out, 0)
    return scaled(xp, out, e)


def unit_scale(xp, image) -> int:
    """Exponent ``e`` such that ``image · 2^-e`` has its largest magnitude in [0.5, 1) (0 for an all-zero
    image). Computed in float64, so any finite float32 image is covered; scaling by a power of two is
    exact, which makes results for inputs ``k·y`` with ``k`` a power of two identical up to that factor."""
    peak = float(xp.abs(image).max())
    return int(np.frexp(peak)[1]) if peak > 0 else 0


def scaled(xp, x, e: int, out=None):
    """``x · 2^e`` in float32, exact (``ldexp``); magnitudes beyond the float32 range saturate at its maximum.
    ``out``: a float32 array of ``x``'s shape to write into (may be ``x`` itself)."""
    top = np.finfo(np.float32).max
    with np.errstate(over="ignore", under="ignore"):
        if out is None:
            out = xp.ldexp(x, xp.int32(e)).astype(xp.float32, copy=False)
        else:
            xp.ldexp(x, xp.int32(e), out=out)
    return xp.clip(out, -top, top, out=out) if e > 0 else out


def check_image(image, name: str = "image", integers_as_float32: bool = True):
    """Validate a 2-D finite image and return it as float32 (same array module).

    With ``integers_as_float32=False`` an integer image is returned as it is, validated but not copied (every
    later step reads it as floats itself); float images are always converted (their float32 range is checked)."""
    xp = array_module(image)
    image = xp.asarray(image)
    real_image_dtype(name, image.dtype)           # bool, complex, text: refused, never silently converted
    if image.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got {image.ndim}-D of shape {image.shape}")
    if min(image.shape) < 2:
        raise ValueError(f"{name} is too small: shape {image.shape}")
    if image.dtype.kind in "iu":                  # always finite
        return image if not integers_as_float32 else image.astype(xp.float32)
    if not bool(xp.all(xp.isfinite(image))):
        raise ValueError(f"{name} contains NaN or inf")
    with np.errstate(over="ignore"):
        out = image.astype(xp.float32, copy=False)
    if out.dtype != image.dtype and image.dtype.kind == "f" and not bool(xp.all(xp.isfinite(out))):
        raise ValueError(f"{name} has values beyond the float32 range (magnitudes above 3.4e38)")
    return out
