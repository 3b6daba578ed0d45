"""Zernike polynomials by Noll index, orthonormal on the unit disk (RMS normalised)."""
from __future__ import annotations

import math

import numpy as np

#: Names of the low-order Noll terms (Noll 1976). Coefficients are in waves RMS.
NOLL_NAMES: dict[int, str] = {
    1: "piston",
    2: "tilt_x",
    3: "tilt_y",
    4: "defocus",
    5: "astigmatism_45",  # sqrt(6) rho^2 sin(2 theta)
    6: "astigmatism_0",   # sqrt(6) rho^2 cos(2 theta)
    7: "coma_y",          # sqrt(8) (3 rho^3 - 2 rho) sin(theta)
    8: "coma_x",
    9: "trefoil_y",
    10: "trefoil_x",
    11: "spherical",
}
NOLL_BY_NAME = {name: j for j, name in NOLL_NAMES.items()}


def noll_to_nm(j: int) -> tuple[int, int]:
    """Radial order ``n`` and signed azimuthal frequency ``m`` of Noll index ``j`` (``j >= 1``).

    Even ``j`` carry ``cos(|m| theta)`` (``m > 0``), odd ``j`` carry ``sin(|m| theta)`` (``m < 0``).
    """
    if not isinstance(j, (int, np.integer)) or j < 1:
        raise ValueError(f"zernike: Noll index must be an integer >= 1, got {j!r}")
    n = 0
    while j > (n + 1) * (n + 2) // 2:
        n += 1
    k = j - n * (n + 1) // 2 - 1          # position within radial order n
    # |m| runs 0,2,2,4,4,... for even n and 1,1,3,3,... for odd n
    m_abs = 2 * (k // 2) + 1 if n % 2 else 2 * ((k + 1) // 2)
    if m_abs == 0:
        return n, 0
    return n, m_abs if j % 2 == 0 else -m_abs


def radial(n: int, m: int, rho: np.ndarray) -> np.ndarray:
    """Zernike radial polynomial R_n^|m|(rho)."""
    m = abs(m)
    out = np.zeros_like(rho, dtype=np.float64)
    for s in range((n - m) // 2 + 1):
        c = ((-1) ** s * math.factorial(n - s)
             / (math.factorial(s) * math.factorial((n + m) // 2 - s) * math.factorial((n - m) // 2 - s)))
        out += c * rho ** (n - 2 * s)
    return out


def zernike(j: int, rho: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Noll-indexed Zernike polynomial Z_j, RMS-normalised over the unit disk.

    Parameters
    ----------
    j : int
        Noll index (1 = piston, 4 = defocus, 5/6 = astigmatism, 7/8 = coma, 11 = spherical).
    rho, theta : ndarray
        Normalised pupil radius (1 at the edge) and azimuth in radians. Values outside the disk are
        evaluated too; masking is the caller's job.
    """
    n, m = noll_to_nm(j)
    r = radial(n, m, rho)
    if m == 0:
        return math.sqrt(n + 1) * r
    norm = math.sqrt(2 * (n + 1))
    return norm * r * (np.cos(m * theta) if m > 0 else np.sin(-m * theta))


def noll_index(key: int | str) -> int:
    """Noll index from an integer or a name of `NOLL_NAMES`."""
    if isinstance(key, str):
        if key.isdigit():
            return noll_index(int(key))
        if key not in NOLL_BY_NAME:
            raise ValueError(f"zernike: unknown aberration {key!r}; known: {', '.join(NOLL_BY_NAME)}")
        return NOLL_BY_NAME[key]
    noll_to_nm(key)  # validates
    return int(key)
