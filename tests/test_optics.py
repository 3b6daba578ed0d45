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
    np.testing.assert_allclose(defocus_to_z(z_to_defocus(dz, o), o), dz)
    # paraxial: peak-to-valley rho^2 term of dz is dz NA^2/(2 n λ) waves = 2 sqrt(3) c
    c = z_to_defocus(1.0, o)
    assert 2 * np.sqrt(3) * c == pytest.approx(1.0 * 0.25 / (2 * 0.5))
