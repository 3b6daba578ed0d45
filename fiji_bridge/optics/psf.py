"""Scalar pupil model: Zernike-aberrated circular pupil -> intensity PSF by FFT."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import scipy.fft

from fiji_bridge.optics.parameters import Optics
from fiji_bridge.optics.zernike import noll_index, zernike

#: Minimum number of pupil samples across the pupil radius for an accurate PSF.
_MIN_PUPIL_RADIUS = 24
#: Largest FFT grid side of one PSF (4096² complex: ~0.7 GB with its temporaries, about a second): enough
#: for PSFs of 2047 pixels, or pixels down to 1/170 of λ/NA (24 pupil samples per radius). Finer requests are
#: refused before anything is allocated.
MAX_FFT_SIZE = 4096
#: Memory budget (bytes) of the pupil fields rendered at once; larger batches are rendered in chunks.
_BATCH_BYTES = 1 << 26


def _fft_size(optics: Optics, size: int) -> int:
    """FFT grid that holds a ``size`` PSF without wrap-around and samples the pupil finely enough."""
    # pupil radius in frequency samples is NA/λ * N * pixel_size
    per_sample = optics.cutoff_frequency * optics.pixel_size
    n = max(2 * size, int(np.ceil(_MIN_PUPIL_RADIUS / per_sample)))
    if n > MAX_FFT_SIZE:
        gib = n * n * 40 / 2**30             # complex128 field and its transform, float64 intensity
        reason = (f"a {size}-pixel PSF" if 2 * size >= n else
                  f"a pixel size of {optics.pixel_size:g} µm ({1 / per_sample:.0f}x finer than λ/NA)")
        raise ValueError(f"psf: {reason} needs a {n}x{n} FFT grid (~{gib:.1f} GiB); at most {MAX_FFT_SIZE}x"
                         f"{MAX_FFT_SIZE} is supported: size <= {MAX_FFT_SIZE // 2 - 1} and pixel size >= "
                         f"{_MIN_PUPIL_RADIUS / (MAX_FFT_SIZE * optics.cutoff_frequency):.2g} µm at NA "
                         f"{optics.na:g}, λ {optics.wavelength:g} µm")
    return scipy.fft.next_fast_len(n)


def pupil_grid(optics: Optics, n_fft: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised pupil radius, azimuth and aperture mask on an ``n_fft`` frequency grid (FFT order)."""
    f = scipy.fft.fftfreq(n_fft, d=optics.pixel_size) / optics.cutoff_frequency
    fy, fx = np.meshgrid(f, f, indexing="ij")
    rho = np.hypot(fx, fy)
    theta = np.arctan2(fy, fx)
    return rho, theta, rho <= 1.0


def _parse_coefficients(coefficients: Mapping[int | str, float] | None) -> dict[int, float]:
    out: dict[int, float] = {}
    for key, value in (coefficients or {}).items():
        value = float(value)
        if not np.isfinite(value):
            raise ValueError(f"psf: Zernike coefficient {key!r} must be finite, got {value}")
        out[noll_index(key)] = out.get(noll_index(key), 0.0) + value
    return out


def psf_batch(optics: Optics, nolls: Sequence[int | str], coefficients: np.ndarray, size: int,
              focal_shift: np.ndarray | None = None) -> np.ndarray:
    """Render many PSFs that share optics and aberration terms.

    Parameters
    ----------
    optics : Optics
        Microscope description; the PSF is sampled at ``optics.pixel_size``.
    nolls : sequence of int or str
        Noll indices (or names, e.g. ``"defocus"``) of the aberration terms.
    coefficients : ndarray, shape (B, len(nolls))
        Zernike coefficients in waves RMS, one row per PSF.
    size : int
        Odd side length of the returned PSFs in pixels.
    focal_shift : ndarray, shape (B,), optional
        Axial shift of the focal plane (µm) added to each row as the exact (non-paraxial) defocus wavefront
        ``−(n·dz/λ)·√(1 − (NA·ρ/n)²)`` of a perfect lens (signed as `defocus_to_z`: its Z4 component has the
        sign of ``dz``), with the aplanatic amplitude ``(1 − (NA·ρ/n)²)^(-1/4)`` of an emission pupil: the
        scalar part of a high-NA PSF, which a Z4 term alone only approximates (at NA/n 0.75 and 1.5 waves RMS
        the Z4-only PSF differs from a vectorial one by ~28 % in L2, this one by ~5 %).
        Default: Zernike terms only, uniform pupil.

    Returns
    -------
    ndarray, shape (B, size, size), float32
        Intensity PSFs, centred at ``size // 2``, each summing to 1.
    """
    if not isinstance(size, (int, np.integer)) or size < 3 or size % 2 == 0:
        raise ValueError(f"psf: size must be an odd integer >= 3, got {size!r}")
    coefficients = np.atleast_2d(np.asarray(coefficients, dtype=np.float64))
    idx = [noll_index(j) for j in nolls]
    if coefficients.shape[1] != len(idx):
        raise ValueError(f"psf: coefficients have {coefficients.shape[1]} columns for {len(idx)} Noll terms")
    if not np.all(np.isfinite(coefficients)):
        raise ValueError("psf: Zernike coefficients must be finite")
    n_fft = _fft_size(optics, size)
    rho, theta, mask = pupil_grid(optics, n_fft)
    rho_in, theta_in = rho[mask], theta[mask]
    basis = np.stack([zernike(j, rho_in, theta_in) for j in idx]) if idx else np.zeros((0, rho_in.size))
    amplitude: np.ndarray | float = 1.0
    if focal_shift is not None:
        focal_shift = np.asarray(focal_shift, dtype=np.float64).reshape(-1)
        if focal_shift.shape[0] != coefficients.shape[0] or not np.all(np.isfinite(focal_shift)):
            raise ValueError(f"psf: focal_shift must be {coefficients.shape[0]} finite values (µm)")
        cos_t = np.sqrt(np.clip(1.0 - (optics.na / optics.n * rho_in) ** 2, 1e-6, None))
        amplitude = cos_t ** -0.5
    c, h = n_fft // 2, size // 2
    out = np.empty((coefficients.shape[0], size, size), np.float32)
    chunk = max(1, _BATCH_BYTES // (40 * n_fft * n_fft))           # bounded memory whatever the batch size
    for start in range(0, coefficients.shape[0], chunk):
        phase = coefficients[start:start + chunk] @ basis          # (b, n_in) waves
        if focal_shift is not None:
            phase = phase - (optics.n / optics.wavelength) * focal_shift[start:start + chunk, None] * cos_t
        field = np.zeros((phase.shape[0], n_fft, n_fft), np.complex128)
        field[:, mask] = amplitude * np.exp(2j * np.pi * phase)
        amp = scipy.fft.ifft2(field, axes=(-2, -1), workers=-1)
        intensity = scipy.fft.fftshift(amp.real**2 + amp.imag**2, axes=(-2, -1))
        crop = intensity[:, c - h:c + h + 1, c - h:c + h + 1]
        out[start:start + chunk] = crop / crop.sum(axis=(-2, -1), keepdims=True)
    return out


def zernike_psf(optics: Optics, coefficients: Mapping[int | str, float] | None = None, size: int = 65) -> np.ndarray:
    """One intensity PSF of a circular pupil aberrated by Zernike terms.

    ``PSF = |FT(P exp(2 pi i W))|^2`` with ``P`` the disk of radius NA/λ and ``W = Σ c_j Z_j`` in waves.

    Parameters
    ----------
    optics : Optics
        Microscope description.
    coefficients : mapping, optional
        Noll index or name -> coefficient in waves RMS, e.g. ``{"defocus": 0.2, 11: 0.05}``.
    size : int
        Odd side length in pixels.

    Returns
    -------
    ndarray, shape (size, size), float32, sums to 1, centred.
    """
    coeffs = _parse_coefficients(coefficients)
    return psf_batch(optics, list(coeffs), np.array([list(coeffs.values())]), size)[0]
