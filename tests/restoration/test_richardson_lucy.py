import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.signal import convolve
from skimage.restoration import richardson_lucy as sk_richardson_lucy

from fiji_bridge.restoration.backend import to_numpy
from fiji_bridge.optics import Optics
from fiji_bridge.optics.psf import psf_batch, zernike_psf
from fiji_bridge.restoration.richardson_lucy import richardson_lucy
from fiji_bridge.restoration.sv_convolution import convolve_sv
from fiji_bridge.simulation.metrics import snr_db
from tests.conftest import array_modules

OPT = Optics(na=0.75, wavelength=0.53, pixel_size=0.16)


def specimen(rng, n=128):
    """Small blobs and thin lines in [0, 1]: structure at several scales."""
    blobs = np.zeros((n, n))
    blobs[tuple(rng.integers(4, n - 4, (2, 60)))] = rng.uniform(0.5, 1, 60)
    lines = np.zeros((n, n))
    for _ in range(8):
        lines[rng.integers(4, n - 4), rng.integers(0, n // 2): rng.integers(n // 2, n)] = 1
    img = ndi.gaussian_filter(blobs, 1.0)
    img = img / img.max() + 0.5 * ndi.gaussian_filter(lines.T if rng.random() < 0.5 else lines, 0.7)
    return img / img.max()


def test_shift_invariant_matches_skimage(rng):
    psf = zernike_psf(OPT, {"defocus": 0.15}, 21)
    blurred = convolve(specimen(rng) * 100 + 5, psf, mode="same").astype(np.float32)
    ref = sk_richardson_lucy(blurred, psf, num_iter=30, clip=False)
    ours = richardson_lucy(blurred, psf, iterations=30, tv=0, boundary="zero")
    inner = (slice(32, -32), slice(32, -32))    # ours also normalises by Hᵀ1 at the edges; skimage does not
    np.testing.assert_allclose(ours[inner], ref[inner], rtol=0, atol=1e-3 * ref[inner].max())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spatially_variant_beats_average_psf(seed):
    rng = np.random.default_rng(seed)
    truth = specimen(rng, 128) * 1000 + 10
    coeffs = np.column_stack([rng.uniform(0.05, 0.25, 4), rng.uniform(-0.08, 0.08, (4, 2))])
    grid = psf_batch(OPT, [4, 5, 6], coeffs, 25).reshape(2, 2, 25, 25)
    blurred = rng.poisson(convolve_sv(truth, grid)).astype(np.float32)
    sv = richardson_lucy(blurred, grid, iterations=40, tv=0.002)
    si = richardson_lucy(blurred, grid.mean(axis=(0, 1)), iterations=40, tv=0.002)
    s_in, s_sv, s_si = snr_db(blurred, truth), snr_db(sv, truth), snr_db(si, truth)
    assert s_sv > s_in + 2.5
    assert s_sv > s_si + 0.5


@pytest.mark.parametrize("image", [
    np.zeros((40, 40)), np.full((40, 40), 7.0), np.eye(40) * 3, np.ones((6, 7)),
    np.pad(np.ones((10, 10)), 15), np.linspace(-5, 5, 1600).reshape(40, 40),
])
def test_output_finite_and_bounded(image):
    psf = zernike_psf(OPT, {"defocus": 0.1}, 5)
    out = richardson_lucy(image, psf, iterations=15, tv=0.01)
    assert out.shape == image.shape and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    assert out.min() >= min(image.min(), 0) - 1e-4


def test_constant_image_stays_constant():
    out = richardson_lucy(np.full((50, 60), 3.0), zernike_psf(OPT, {}, 9), iterations=10, tv=0.01)
    np.testing.assert_allclose(out, 3.0, rtol=1e-4)


def test_tile_centres_reproduce_global_weights(rng):
    """Node centres outside the array (as for a tile) give the same operator as the global grid."""
    grid = psf_batch(OPT, [4], rng.uniform(0, 0.3, (9, 1)), 15).reshape(3, 3, 15, 15)
    image = rng.random((96, 96)).astype(np.float32) + 1
    full = richardson_lucy(image, grid, iterations=3, tv=0, boundary="zero")
    same = richardson_lucy(image, grid, iterations=3, tv=0, boundary="zero",
                           centres=(np.array([15.5, 47.5, 79.5]), np.array([15.5, 47.5, 79.5])))
    np.testing.assert_allclose(full, same, rtol=1e-5)


@pytest.mark.parametrize("kw, match", [
    (dict(iterations=0), "iterations"), (dict(tv=-1), "tv"), (dict(tv=0.5), "tv"),
    (dict(boundary="wrap"), "boundary"), (dict(centres=(np.arange(2), np.arange(3))), "centres"),
])
def test_bad_parameters(kw, match):
    with pytest.raises(ValueError, match=match):
        richardson_lucy(np.ones((30, 30)), np.ones((3, 3)), **kw)


@pytest.mark.parametrize("xp", array_modules()[1:])
def test_cupy_matches_numpy(xp, rng):
    grid = psf_batch(OPT, [4, 5, 6], rng.uniform(-0.2, 0.2, (9, 3)), 21).reshape(3, 3, 21, 21)
    blurred = convolve_sv(specimen(rng) * 100 + 1, grid)
    ref = richardson_lucy(blurred, grid, iterations=20, tv=0.002)
    gpu = to_numpy(richardson_lucy(xp.asarray(blurred), xp.asarray(grid), iterations=20, tv=0.002))
    np.testing.assert_allclose(gpu, ref, rtol=1e-4, atol=1e-4 * ref.max())
