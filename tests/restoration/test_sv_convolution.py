import numpy as np
import pytest
from scipy.signal import convolve

from fiji_bridge.restoration.backend import to_numpy
from fiji_bridge.optics import Optics
from fiji_bridge.optics.psf import psf_batch
from fiji_bridge.restoration.sv_convolution import SVConvolution, convolve_sv, node_centres, tent_weights

from tests.conftest import array_modules

OPT = Optics(na=0.75, wavelength=0.53, pixel_size=0.16)


def _grid(rng, gy, gx, size=21):
    return psf_batch(OPT, [4, 5, 6], rng.uniform(-0.25, 0.25, (gy * gx, 3)), size).reshape(gy, gx, size, size)


@pytest.mark.parametrize("gy, gx, shape", [(1, 1, (64, 80)), (3, 4, (97, 130)), (5, 2, (120, 64))])
def test_partition_of_unity(gy, gx, shape):
    wy = tent_weights(shape[0], node_centres(shape[0], gy))
    wx = tent_weights(shape[1], node_centres(shape[1], gx))
    total = np.einsum("iy,jx->yx", wy, wx)
    np.testing.assert_allclose(total, 1.0, atol=1e-12)
    assert wy.min() >= 0


@pytest.mark.parametrize("xp", array_modules())
@pytest.mark.parametrize("gy, gx", [(1, 1), (3, 4), (6, 5)])
def test_adjoint_identity(xp, gy, gx, rng):
    shape = (96, 123)
    op = SVConvolution(xp.asarray(_grid(rng, gy, gx)), shape)
    x = xp.asarray(rng.random(shape, dtype=np.float32))
    y = xp.asarray(rng.random(shape, dtype=np.float32))
    lhs = float(xp.vdot(op.forward(x).astype(xp.float64), y))
    rhs = float(xp.vdot(x.astype(xp.float64), op.adjoint(y).astype(xp.float64)))
    assert lhs == pytest.approx(rhs, rel=1e-5)


def test_equal_psfs_equal_shift_invariant_convolution(rng):
    psf = _grid(rng, 1, 1, 25)[0, 0]
    image = rng.random((90, 110)).astype(np.float32)
    grid = np.broadcast_to(psf, (4, 3, 25, 25)).copy()
    ref = convolve(image.astype(np.float64), psf.astype(np.float64), mode="same")
    out = convolve_sv(image, grid)
    assert out.dtype == np.float32 and out.shape == image.shape
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * ref.max())


def test_even_psf_matches_scipy_centring(rng):
    psf = rng.random((6, 8)).astype(np.float32)
    image = rng.random((40, 50)).astype(np.float32)
    np.testing.assert_allclose(convolve_sv(image, psf), convolve(image, psf, mode="same"), atol=1e-5)


def test_sv_blur_uses_local_psf(rng):
    # a point source under node (0, 0) is blurred by PSF (0, 0), not by its neighbours
    grid = _grid(rng, 2, 2, 21)
    image = np.zeros((130, 130), np.float32)      # nodes at pixels 32 and 97
    image[32, 32] = 1
    out = convolve_sv(image, grid)
    np.testing.assert_allclose(out[22:43, 22:43], grid[0, 0], atol=1e-6)


def test_no_wraparound(rng):
    psf = _grid(rng, 1, 1, 21)[0, 0]
    image = np.zeros((64, 64), np.float32)
    image[:, -1] = 1.0                           # bright right edge must not leak to the left edge
    assert np.abs(convolve_sv(image, psf)[:, :5]).max() < 1e-7


@pytest.mark.parametrize("xp", array_modules())
@pytest.mark.parametrize("h, w", [(21, 21), (25, 17), (20, 21)])
def test_circular_single_psf_is_exact_on_the_observed_pixels(xp, h, w, rng):
    """One PSF observed only where its support lies inside the array (RL's 'extend' field): the operator uses
    FFTs of the array's own size (circular), and forward and adjoint equal the linear convolution and
    correlation on the observed pixels; an even PSF (no such margin) keeps the linear FFT size."""
    psf = rng.random((h, w)).astype(np.float32)
    py, px = (h - 1) // 2, (w - 1) // 2
    field = (70 + 2 * py, 93 + 2 * px)
    observed = (slice(py, py + 70), slice(px, px + 93))
    op = SVConvolution(xp.asarray(psf), field, observed=observed)
    circular = h % 2 == 1 and w % 2 == 1
    assert op._circular == circular
    if circular:
        assert op.groups[0].fft_shape[0] < field[0] + h - 1 or op.groups[0].fft_shape[1] < field[1] + w - 1
    x = rng.random(field).astype(np.float32)
    ref = convolve(x.astype(np.float64), psf.astype(np.float64), mode="same")[observed]
    np.testing.assert_allclose(to_numpy(op.forward(xp.asarray(x))), ref, rtol=0, atol=2e-5 * ref.max())
    y = rng.random((70, 93)).astype(np.float32)
    padded = np.zeros(field)
    padded[observed] = y
    adj = convolve(padded, psf[::-1, ::-1].astype(np.float64), mode="same")
    if h % 2 == 0 or w % 2 == 0:       # scipy's 'same' centring of an even kernel flips with the kernel
        lhs = float(np.vdot(to_numpy(op.forward(xp.asarray(x))).astype(np.float64), y))
        rhs = float(np.vdot(x.astype(np.float64), to_numpy(op.adjoint(xp.asarray(y))).astype(np.float64)))
        assert lhs == pytest.approx(rhs, rel=1e-5)
    else:
        np.testing.assert_allclose(to_numpy(op.adjoint(xp.asarray(y))), adj, rtol=0, atol=2e-5 * adj.max())


@pytest.mark.parametrize("image, psfs, match", [
    (np.zeros((4, 5, 6)), np.ones((3, 3)), "2-D"),
    (np.full((20, 20), np.nan), np.ones((3, 3)), "NaN"),
    (np.zeros((20, 20)), np.ones((25, 3)), "larger than the image"),
    (np.zeros((20, 20)), np.ones((15, 2, 3, 3)), "does not fit"),
    (np.zeros((20, 20)), np.ones((2, 3, 3)), "psfs"),
    (np.zeros((20, 20)), -np.ones((3, 3)), "non-negative"),
])
def test_bad_input(image, psfs, match):
    with pytest.raises(ValueError, match=match):
        convolve_sv(image, psfs)


@pytest.mark.parametrize("xp", array_modules()[1:])
def test_cupy_matches_numpy(xp, rng):
    grid = _grid(rng, 3, 3)
    image = rng.random((100, 90)).astype(np.float32)
    ref = convolve_sv(image, grid)
    np.testing.assert_allclose(to_numpy(convolve_sv(xp.asarray(image), xp.asarray(grid))), ref,
                               rtol=1e-4, atol=1e-4 * ref.max())


def test_check_image_can_keep_integer_images_uncopied():
    """`deconvolve` validates an integer image without a float32 copy of it (peak memory); floats are
    converted (their float32 range is checked) and what is refused stays refused."""
    from fiji_bridge.restoration.sv_convolution import check_image
    counts = np.arange(64, dtype=np.uint16).reshape(8, 8)
    assert check_image(counts, integers_as_float32=False) is counts
    assert check_image(counts).dtype == np.float32
    assert check_image(counts.astype(np.float64), integers_as_float32=False).dtype == np.float32
    for bad, match in ((counts > 3, "bool"), (counts[:1], "too small"), (counts[None], "2-D")):
        with pytest.raises(ValueError, match=match):
            check_image(bad, integers_as_float32=False)
