import numpy as np
import pytest
from scipy.special import j1

from fiji_bridge.optics import Optics
from fiji_bridge.optics.psf import psf_batch, zernike_psf

FINE = Optics(na=0.8, wavelength=0.52, pixel_size=0.02)   # fine sampling to measure the Airy pattern


def _radial_profile(psf):
    c = psf.shape[0] // 2
    y, x = np.indices(psf.shape)
    r = np.hypot(y - c, x - c)
    rb = np.round(r).astype(int)
    return np.bincount(rb.ravel(), psf.ravel()) / np.bincount(rb.ravel())


def test_in_focus_fwhm_matches_airy():
    psf = zernike_psf(FINE, {}, size=129)
    prof = psf[64, 64:].astype(np.float64)
    half = prof[0] / 2
    i = int(np.argmax(prof < half))
    x = i - 1 + (prof[i - 1] - half) / (prof[i - 1] - prof[i])
    fwhm = 2 * x * FINE.pixel_size
    assert fwhm == pytest.approx(0.51 * FINE.wavelength / FINE.na, rel=0.03)


def test_first_dark_ring_at_0_61_lambda_over_na():
    psf = zernike_psf(FINE, {}, size=129)
    prof = _radial_profile(psf)
    first_min = np.argmax((prof[1:-1] < prof[:-2]) & (prof[1:-1] < prof[2:])) + 1
    assert abs(first_min * FINE.pixel_size - 0.61 * FINE.wavelength / FINE.na) <= FINE.pixel_size


def test_matches_analytic_airy_pattern():
    psf = zernike_psf(FINE, {}, size=65).astype(np.float64)
    c = 32
    y, x = np.indices(psf.shape)
    v = 2 * np.pi * FINE.na / FINE.wavelength * np.hypot(y - c, x - c) * FINE.pixel_size
    with np.errstate(invalid="ignore", divide="ignore"):
        airy = np.where(v == 0, 1.0, (2 * j1(v) / v) ** 2)
    np.testing.assert_allclose(psf / psf.max(), airy, atol=0.01)


def test_normalised_centred_odd_float32():
    o = Optics(na=0.75, wavelength=0.53, pixel_size=0.16)
    psf = zernike_psf(o, {"defocus": 0.2, "astigmatism_0": 0.1}, size=31)
    assert psf.dtype == np.float32 and psf.shape == (31, 31)
    assert psf.sum() == pytest.approx(1.0, abs=1e-5) and psf.min() >= 0
    focus = zernike_psf(o, {}, size=31)
    assert np.unravel_index(np.argmax(focus), focus.shape) == (15, 15)
    with pytest.raises(ValueError, match="odd"):
        zernike_psf(o, {}, size=32)


def test_defocus_sign_symmetry():
    o = Optics(na=0.75, wavelength=0.53, pixel_size=0.16)
    np.testing.assert_allclose(zernike_psf(o, {4: 0.3}, 41), zernike_psf(o, {4: -0.3}, 41), atol=1e-7)
    # even aberrations: (d, a) and (-d, -a) are the same intensity PSF, (d, -a) is not
    p = zernike_psf(o, {4: 0.2, 6: 0.1}, 41)
    np.testing.assert_allclose(p, zernike_psf(o, {4: -0.2, 6: -0.1}, 41), atol=1e-7)
    assert np.abs(p - zernike_psf(o, {4: 0.2, 6: -0.1}, 41)).max() > 1e-3


def test_psf_broadens_monotonically_with_defocus():
    o = Optics(na=0.75, wavelength=0.53, pixel_size=0.16)
    c = np.linspace(0, 0.5, 8)[:, None]
    psfs = psf_batch(o, [4], c, 63).astype(np.float64)
    y, x = np.indices(psfs.shape[1:]) - 31
    r2 = (psfs * (x**2 + y**2)).sum(axis=(1, 2))
    assert np.all(np.diff(r2) > 0)
    # radius holding 80 % of the energy never shrinks (the peak itself oscillates with defocus)
    order = np.argsort(x**2 + y**2, axis=None)
    ee = np.cumsum(psfs.reshape(len(c), -1)[:, order], axis=1)
    r80 = np.sqrt((x**2 + y**2).ravel()[order][np.argmax(ee >= 0.8, axis=1)])
    assert np.all(np.diff(r80) >= 0) and r80[-1] > 3 * r80[0]


def test_batch_equals_single():
    o = Optics(na=0.75, wavelength=0.53, pixel_size=0.16)
    coeffs = np.array([[0.1, 0.05, -0.02], [0.3, 0.0, 0.1]])
    batch = psf_batch(o, ["defocus", 5, 6], coeffs, 33)
    for k in range(2):
        np.testing.assert_allclose(batch[k], zernike_psf(o, dict(zip([4, 5, 6], coeffs[k])), 33), atol=1e-7)


def test_focal_shift_pupil_is_the_z4_psf_at_low_na_with_the_same_sign():
    """At NA/n 0.2 the exact defocus wavefront is Z4 to first order: a focal shift ``defocus_to_z(c)`` gives
    the Z4 PSF of coefficient c, astigmatism keeping its orientation relative to defocus (sign convention)."""
    from fiji_bridge.optics import defocus_to_z

    o = Optics(na=0.2, wavelength=0.53, pixel_size=0.25 * 0.53 / 0.2, n=1.0)
    c, astig = 0.8, 0.15
    dz = float(defocus_to_z(c, o))
    ref = psf_batch(o, [4, 6], np.array([[c, astig]]), 65)[0]
    same = psf_batch(o, [4, 6], np.array([[0.0, astig]]), 65, focal_shift=np.array([dz]))[0]
    flipped = psf_batch(o, [4, 6], np.array([[0.0, astig]]), 65, focal_shift=np.array([-dz]))[0]
    rel = lambda a: np.linalg.norm(a - ref) / np.linalg.norm(ref)   # noqa: E731
    assert rel(same) < 0.03 < 0.3 < rel(flipped)
    assert same.dtype == np.float32 and same.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("relative_na", [0.75, 0.92])
def test_focal_shift_pupil_is_closer_to_a_vectorial_psf_than_z4_beyond_the_paraxial_regime(relative_na):
    """Against `psfmodels`' vectorial Gibson–Lanni PSF at the depth of c = 1 wave RMS, the non-paraxial,
    apodised pupil is several times closer (L2) than the Z4-only PSF of the same coefficient."""
    pytest.importorskip("psfmodels")
    from fiji_bridge.optics import defocus_to_z
    from training.depth_calibration import vectorial_psf

    o = Optics(na=relative_na, wavelength=0.53, pixel_size=0.25 * 0.53 / relative_na, n=1.0)
    c = 1.0
    dz = float(defocus_to_z(c, o))
    truth = vectorial_psf(o, dz, 97)
    z4 = psf_batch(o, [4], np.array([[c]]), 97)[0]
    exact = psf_batch(o, [4], np.array([[0.0]]), 97, focal_shift=np.array([dz]))[0]
    err = lambda a: np.linalg.norm(a - truth) / np.linalg.norm(truth)   # noqa: E731
    assert err(exact) < 0.12 and err(exact) < err(z4) / 2.5


def test_focal_shift_is_validated():
    o = Optics(na=0.75, wavelength=0.53, pixel_size=0.16)
    with pytest.raises(ValueError, match="focal_shift"):
        psf_batch(o, [4], np.zeros((2, 1)), 33, focal_shift=np.array([0.1]))
    with pytest.raises(ValueError, match="focal_shift"):
        psf_batch(o, [4], np.zeros((1, 1)), 33, focal_shift=np.array([np.nan]))
