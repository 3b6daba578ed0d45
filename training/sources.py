"""Offline source images and the train / held-out specimen split.

Two kinds of sharp source material feed training synthesis:

* real images that ship *inside* the installed scikit-image wheel (never the
  pooch-downloaded ones, so nothing touches the network), and
* procedural specimens from :mod:`training.specimens`, identified by an
  integer seed.

Split (fixed; change it only together with a note in the training log)
----------------------------------------------------------------------
Real images:
    ``HELDOUT_IMAGES`` holds two microscopy images (``cell``, phase contrast;
    ``immunohistochemistry``, bright-field IHC) plus one natural texture
    (``gravel``).  They are never used in training.  Everything else in
    ``TRAIN_IMAGES``.  ``human_mitosis`` is *not* shipped in the wheel (it is
    fetched with pooch), so it cannot be used offline.
Procedural specimens:
    Training uses seeds ``TRAIN_SEEDS = range(0, 10**6)``, evaluation uses
    ``HELDOUT_SEEDS = range(10**6, 2 * 10**6)``.  Each seed fixes both the
    generator type and all of its parameters, so a held-out specimen is
    reproducible from its seed alone.

Geometric augmentation (90-degree rotations, flips) happens here, on the sharp
image and *before* any blur, so PSF / Zernike labels never need transforming.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import skimage.data
from skimage import color, transform, util
from skimage.data import _registry

from fiji_bridge.simulation.specimens import GENERATORS

# name -> (file in skimage's registry, RGB channel to keep; None = already gray,
# "luma" = luminance).  Channels chosen for the most specimen contrast: IHC blue
# (hematoxylin/DAB absorption), fundus green (standard vessel channel).
_CANDIDATES: dict[str, tuple[str, int | str | None]] = {
    "cell": ("data/cell.png", None),
    "immunohistochemistry": ("data/ihc.png", 2),
    "retina": ("data/retina.jpg", 1),
    "microaneurysms": ("data/microaneurysms.png", None),
    "hubble_deep_field": ("data/hubble_deep_field.jpg", "luma"),
    "coins": ("data/coins.png", None),
    "moon": ("data/moon.png", None),
    "camera": ("data/camera.png", None),
    "text": ("data/text.png", None),
    "page": ("data/page.png", None),
    "brick": ("data/brick.png", None),
    "grass": ("data/grass.png", None),
    "gravel": ("data/gravel.png", None),
    "human_mitosis": ("data/mitosis.tif", None),  # pooch-fetched: expected absent
}

HELDOUT_IMAGES: tuple[str, ...] = ("cell", "immunohistochemistry", "gravel")
TRAIN_IMAGES: tuple[str, ...] = (
    "retina", "microaneurysms", "hubble_deep_field", "coins", "moon", "camera",
    "text", "page", "brick", "grass",
)

TRAIN_SEEDS: range = range(0, 10**6)
HELDOUT_SEEDS: range = range(10**6, 2 * 10**6)

SPLITS: dict[str, tuple[tuple[str, ...], range]] = {
    "train": (TRAIN_IMAGES, TRAIN_SEEDS),
    "heldout": (HELDOUT_IMAGES, HELDOUT_SEEDS),
}


def _shipped_path(name: str) -> str:
    """Path where the wheel puts ``name``'s file (it may not exist)."""
    data_dir = os.path.dirname(skimage.data.__file__)
    return os.path.join(data_dir, os.path.basename(_CANDIDATES[name][0]))


def shipped_images() -> tuple[str, ...]:
    """Names of candidate images whose file is really inside the installed wheel.

    Returns
    -------
    tuple of str
        Candidates whose registry entry exists and whose file is on disk in the
        ``skimage.data`` package directory.
    """
    return tuple(n for n, (f, _) in _CANDIDATES.items()
                 if f in _registry.registry and os.path.exists(_shipped_path(n)))


@lru_cache(maxsize=None)
def load_source(name: str) -> np.ndarray:
    """Load a shipped scikit-image image as grayscale float32 in [0, 1].

    Parameters
    ----------
    name : str
        A name from :func:`shipped_images`.

    Returns
    -------
    numpy.ndarray
        Read-only 2-D float32 array, min-max normalised to [0, 1]; cached.

    Raises
    ------
    KeyError
        If ``name`` is not a candidate.
    FileNotFoundError
        If the file is not in the wheel; we refuse rather than let pooch try
        to download it.
    """
    if name not in _CANDIDATES:
        raise KeyError(f"unknown source image {name!r}")
    if not os.path.exists(_shipped_path(name)):
        raise FileNotFoundError(f"{name!r} is not shipped in the installed scikit-image wheel")
    img = getattr(skimage.data, name)()
    channel = _CANDIDATES[name][1]
    if channel == "luma":
        img = color.rgb2gray(img)
    elif channel is not None:
        img = img[..., channel]
    img = util.img_as_float32(img)
    lo, hi = float(img.min()), float(img.max())
    img = ((img - lo) / max(hi - lo, 1e-12)).astype(np.float32)
    img.setflags(write=False)  # shared through the cache
    return img


def _orient(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random element of the 8-fold dihedral group (exact, no interpolation)."""
    img = np.rot90(img, int(rng.integers(4)))
    return img[:, ::-1] if rng.random() < 0.5 else img


class SpecimenSampler:
    """Draw sharp square patches from one split's real and procedural sources.

    Parameters
    ----------
    split : {"train", "heldout"}
        Which images and seed range to draw from.
    rng : numpy.random.Generator
        Source of all randomness of the sampler.
    p_real : float, optional
        Probability of a real-image crop rather than a procedural specimen.
    scale_range : tuple of float, optional
        Range of the random (log-uniform) rescale of real images.  Images too
        small for the patch are upscaled beyond it, just enough to fit.
    gamma_range : tuple of float, optional
        Range of the random (log-uniform) gamma of real crops.
    """

    #: Crops flatter than this (e.g. retina's black border) are redrawn.
    MIN_STD = 0.02

    def __init__(self, split: str, rng: np.random.Generator, p_real: float = 0.5,
                 scale_range: tuple[float, float] = (0.5, 2.0),
                 gamma_range: tuple[float, float] = (0.6, 1.6)) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        self.images, self.seeds = SPLITS[split]
        self.rng = rng
        self.p_real = p_real
        self.scale_range = scale_range
        self.gamma_range = gamma_range
        self.last_kind = ""   # what the last `sample` drew: a real image's name or a generator's name

    def sample(self, size: int) -> np.ndarray:
        """Return one sharp ``size`` x ``size`` float32 patch in [0, 1].

        Parameters
        ----------
        size : int
            Patch side in pixels.

        Returns
        -------
        numpy.ndarray
            float32 patch in [0, 1], randomly rotated / flipped.
        """
        patch = self._real(size) if self.rng.random() < self.p_real else self._procedural(size)
        return np.ascontiguousarray(_orient(patch, self.rng), dtype=np.float32)

    def _procedural(self, size: int) -> np.ndarray:
        # The seed alone fixes generator type and parameters (reproducible specimen).
        seed = int(self.rng.integers(self.seeds.start, self.seeds.stop))
        gen_rng = np.random.default_rng(seed)
        names = sorted(GENERATORS)
        self.last_kind = names[int(gen_rng.integers(len(names)))]
        return GENERATORS[self.last_kind]((size, size), gen_rng)

    def _real(self, size: int, tries: int = 10) -> np.ndarray:
        lo, hi = np.log(self.scale_range[0]), np.log(self.scale_range[1])
        for _ in range(tries):
            self.last_kind = self.images[int(self.rng.integers(len(self.images)))]
            img = load_source(self.last_kind)
            scale = max(float(np.exp(self.rng.uniform(lo, hi))), size / min(img.shape))
            # Crop first, then resize: costs O(size^2) whatever the image size.
            src = min(int(np.ceil(size / scale)), *img.shape)
            y = int(self.rng.integers(img.shape[0] - src + 1))
            x = int(self.rng.integers(img.shape[1] - src + 1))
            crop = img[y:y + src, x:x + src]
            if src != size:
                crop = transform.resize(crop, (size, size), order=3, mode="reflect",
                                        anti_aliasing=src > size)
            crop = np.clip(crop, 0.0, 1.0)
            if crop.std() >= self.MIN_STD:
                break
        gamma = float(np.exp(self.rng.uniform(*np.log(self.gamma_range))))
        out = crop ** gamma
        # Random contrast window inside [0, 1], as for the procedural specimens.
        c_lo = self.rng.uniform(0.0, 0.2)
        c_hi = self.rng.uniform(max(c_lo + 0.4, 0.6), 1.0)
        out = (out - out.min()) / max(float(np.ptp(out)), 1e-12)
        return (c_lo + (c_hi - c_lo) * out).astype(np.float32)
