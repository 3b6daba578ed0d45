import numpy as np
import pytest

from fiji_bridge.optics.zernike import noll_index, noll_to_nm, zernike


def test_noll_ordering_matches_noll_1976():
    expected = {1: (0, 0), 2: (1, 1), 3: (1, -1), 4: (2, 0), 5: (2, -2), 6: (2, 2), 7: (3, -1), 8: (3, 1),
                9: (3, -3), 10: (3, 3), 11: (4, 0), 12: (4, 2), 13: (4, -2), 22: (6, 0)}
    for j, nm in expected.items():
        assert noll_to_nm(j) == nm


def _disk_samples(n=801):
    t = (np.arange(n) + 0.5) / n * 2 - 1
    x, y = np.meshgrid(t, t)
    inside = x**2 + y**2 <= 1
    return np.hypot(x, y)[inside], np.arctan2(y, x)[inside]


def test_orthonormal_on_unit_disk():
    rho, theta = _disk_samples()
    js = list(range(1, 16))
    z = np.stack([zernike(j, rho, theta) for j in js])
    gram = z @ z.T / rho.size     # mean over the disk = RMS-normalised inner product
    np.testing.assert_allclose(gram, np.eye(len(js)), atol=5e-3)


def test_known_closed_forms():
    rho, theta = _disk_samples(101)
    np.testing.assert_allclose(zernike(4, rho, theta), np.sqrt(3) * (2 * rho**2 - 1), atol=1e-12)
    np.testing.assert_allclose(zernike(6, rho, theta), np.sqrt(6) * rho**2 * np.cos(2 * theta), atol=1e-12)
    np.testing.assert_allclose(zernike(11, rho, theta), np.sqrt(5) * (6 * rho**4 - 6 * rho**2 + 1), atol=1e-12)


def test_names_and_bad_indices():
    assert noll_index("defocus") == 4 and noll_index("spherical") == 11 and noll_index("7") == 7
    with pytest.raises(ValueError, match="Noll"):
        noll_to_nm(0)
    with pytest.raises(ValueError, match="unknown aberration"):
        noll_index("wobble")
