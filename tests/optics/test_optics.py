import warnings

import numpy as np
import pytest

from fiji_bridge.optics import Optics, defocus_to_z, z_to_defocus


def test_valid_optics_properties():
    o = Optics(na=0.8, wavelength=0.52, pixel_size=0.1)
    assert o.cutoff_frequency == pytest.approx(0.8 / 0.52)
    assert o.nyquist_pixel_size == pytest.approx(0.52 / 3.2)
    assert Optics.from_dict(o.to_dict()) == o


@pytest.mark.parametrize("kw, name", [
    (dict(na=0.0), "na"), (dict(wavelength=-0.5), "wavelength"), (dict(pixel_size=float("nan")), "pixel_size"),
    (dict(n=0), "n"), (dict(na=1.2), "na"),
])
def test_bad_optics_name_the_parameter(kw, name):
    args = dict(na=0.8, wavelength=0.52, pixel_size=0.1, n=1.0) | kw
    with pytest.raises(ValueError, match=name):
        Optics(**args)


def test_undersampling_warns():
    with pytest.warns(UserWarning, match="Nyquist"):
        Optics(na=1.4, wavelength=0.5, pixel_size=0.2, n=1.518)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Optics(na=1.4, wavelength=0.5, pixel_size=0.08, n=1.518)


def test_defocus_distance_round_trip_and_paraxial_formula():
    o = Optics(na=0.5, wavelength=0.5, pixel_size=0.1, n=1.0)
    dz = np.array([-2.0, 0.0, 1.5])
    np.testing.assert_allclose(defocus_to_z(z_to_defocus(dz, o), o), dz, rtol=1e-5, atol=1e-9)
    # paraxial: the peak-to-valley rho^2 term of dz is dz NA^2/(2 n λ) waves = 2 sqrt(3) c; at NA 0.5 the exact
    # wavefront's Z4 projection is 7 % larger, and near focus a vectorial PSF fits a further ~9 % more Z4
    c = z_to_defocus(1.0, o)
    assert 2 * np.sqrt(3) * c == pytest.approx(1.0 * 0.25 / (2 * 0.5) * 1.07 * 1.09, rel=0.02)


def test_depth_is_non_paraxial():
    # NA 0.75 in air: the exact defocus wavefront's Z4 projection is 1.19x the paraxial one, so depth is
    # ~16 % smaller than 4·√3·n·λ·c/NA² (which overstated it by 19.5 %)
    o = Optics(na=0.75, wavelength=0.53, pixel_size=0.16)
    paraxial = 4 * np.sqrt(3) * o.n * o.wavelength * 0.35 / o.na**2
    assert 0.80 < defocus_to_z(0.35, o) / paraxial < 0.86
    # at low NA the relation is paraxial
    low = Optics(na=0.1, wavelength=0.5, pixel_size=1.0)
    assert defocus_to_z(0.5, low) == pytest.approx(4 * np.sqrt(3) * 0.5 * 0.5 / 0.01, rel=0.01)


@pytest.mark.parametrize("na, n, c, tolerance", [
    (0.3, 1.0, 0.6, 0.03), (0.65, 1.0, 1.25, 0.03), (0.8, 1.0, 0.45, 0.03), (1.0, 1.33, 1.45, 0.03),
    (1.2, 1.33, 0.3, 0.03), (1.3, 1.518, 0.8, 0.03),
    (1.4, 1.518, 1.0, 0.08),     # NA/n 0.92: Z4-only fits of a vectorial PSF are bimodal near 1 wave
])
def test_depth_matches_vectorial_psf(na, n, c, tolerance):
    """The focal shift whose vectorial (Gibson–Lanni, psfmodels) PSF is best fitted by a Z4-only PSF of
    coefficient c is what `defocus_to_z(c)` reports, off the calibration table's grid."""
    pytest.importorskip("psfmodels")
    from training.depth_calibration import SAMPLING, best_z4, psf_size, vectorial_psf

    o = Optics(na=na, wavelength=0.55, pixel_size=SAMPLING * 0.55 / na, n=n)
    dz = float(defocus_to_z(c, o))
    fitted = best_z4(o, vectorial_psf(o, dz, psf_size(1.8 * c)), c)
    assert float(defocus_to_z(fitted, o)) / dz == pytest.approx(1.0, abs=tolerance)


@pytest.mark.parametrize("na, n, c", [(0.3, 1.0, 1.0), (0.75, 1.0, 0.3), (0.75, 1.0, 1.5), (0.95, 1.0, 0.6),
                                      (1.2, 1.33, 1.0), (1.4, 1.518, 1.0), (1.45, 1.518, 0.3)])
def test_training_psf_at_a_depth_matches_the_vectorial_psf_at_that_depth(na, n, c):
    """The depth the runtime reports for a reading is the depth of the training PSFs given that label
    (`training.synthesis.focal_shift_psfs`, labelled through `defocus_to_z`), and those PSFs match the
    vectorial (Gibson–Lanni, psfmodels) PSF at the same depth to within 3 %, up to NA/n 0.955 -- including
    NA 1.4 oil at 1 wave, where Z4-only fits of the vectorial PSF are bimodal (the test above, 8 %)."""
    pytest.importorskip("psfmodels")
    from training.depth_calibration import SAMPLING, best_focal_shift, psf_size, vectorial_psf

    o = Optics(na=na, wavelength=0.55, pixel_size=SAMPLING * 0.55 / na, n=n)
    dz = float(defocus_to_z(c, o))
    fitted = best_focal_shift(o, vectorial_psf(o, dz, psf_size(1.8 * c)), dz)
    assert fitted / dz == pytest.approx(1.0, abs=0.03)
