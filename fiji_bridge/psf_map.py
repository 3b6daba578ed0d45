"""PSF-parameter maps: sliding-window CNN inference (ONNX Runtime), gap filling, median filtering, PSF grids."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from .model import PSFModel
from .optics import Optics, defocus_to_z
from .psf import psf_batch
from .sv_convolution import check_image, node_centres

Progress = Callable[[float, str], None]


@dataclass
class PSFMap:
    """Local PSF parameters on the grid of patch centres.

    Attributes
    ----------
    parameters : ndarray, shape (P, my, mx)
        Filtered parameter values (Zernike coefficients, waves RMS), one plane per name.
    raw : ndarray, shape (P, my, mx)
        Network estimates before gap filling and median filtering.
    std : ndarray, shape (P, my, mx)
        Predicted standard deviation of the raw estimates.
    confidence : ndarray, shape (my, mx)
        Probability that the patch carries blur information.
    informative : ndarray of bool, shape (my, mx)
        ``confidence >= 0.5``; other patches were filled from their nearest informative neighbour.
    centres_y, centres_x : ndarray
        Patch centres in pixels of the input image.
    """

    parameters: np.ndarray
    raw: np.ndarray
    std: np.ndarray
    confidence: np.ndarray
    informative: np.ndarray
    centres_y: np.ndarray
    centres_x: np.ndarray
    names: list[str]
    units: list[str]
    nolls: list[int]
    patch_size: int          # in input-image pixels
    stride: int              # in input-image pixels
    optics: Optics           # of the input image
    psf_size: int            # odd PSF side in input-image pixels
    image_shape: tuple[int, int]
    provider: str = "CPUExecutionProvider"
    info: dict = field(default_factory=dict)

    def parameter(self, name: str) -> np.ndarray:
        if name not in self.names:
            raise ValueError(f"no parameter {name!r} in this map (has {self.names})")
        return self.parameters[self.names.index(name)]

    def depth_um(self) -> np.ndarray:
        """|defocus| as axial distance from focus in µm (paraxial; see `fiji_bridge.optics.defocus_to_z`)."""
        return np.abs(defocus_to_z(self.parameter("defocus"), self.optics)).astype(np.float32)

    def to_stack(self) -> tuple[np.ndarray, list[str], dict]:
        """(stack, slice labels, metadata) for an ImageJ stack: one slice per parameter, then the
        information confidence and the depth map (µm). Map pixels are ``stride`` image pixels apart."""
        stack = np.concatenate([self.parameters, self.confidence[None], self.depth_um()[None]]).astype(np.float32)
        labels = [*self.names, "confidence", "depth_um"]
        meta = {"parameters": self.names, "units": [*self.units, "probability", "µm"],
                "patch_size_px": self.patch_size, "stride_px": self.stride,
                "first_centre_px": [float(self.centres_y[0]), float(self.centres_x[0])],
                "image_shape": list(self.image_shape), "optics": self.optics.to_dict(), **self.info}
        return stack, labels, meta

    def grid_nodes(self, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Node coordinates (pixels) of a deconvolution PSF grid: centres of a regular (gy, gx) partition."""
        return node_centres(self.image_shape[0], grid[0]), node_centres(self.image_shape[1], grid[1])

    def parameters_at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Bilinear interpolation of the filtered map at the grid ``ys`` x ``xs`` -> (len(ys), len(xs), P)."""
        fy = np.interp(ys, self.centres_y, np.arange(len(self.centres_y)))
        fx = np.interp(xs, self.centres_x, np.arange(len(self.centres_x)))
        yy, xx = np.meshgrid(fy, fx, indexing="ij")
        return np.stack([ndimage.map_coordinates(p, [yy, xx], order=1, mode="nearest") for p in self.parameters], -1)

    def render_psfs(self, grid: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """PSFs for the deconvolution.

        Parameters
        ----------
        grid : (gy, gx), optional
            Regular grid of PSF nodes; default: `default_grid` for the image size.

        Returns
        -------
        psfs : ndarray, shape (gy, gx, s, s), float32
        centres_y, centres_x : ndarray
            Node coordinates in image pixels (pass as ``centres`` to `richardson_lucy`).
        """
        grid = default_grid(self.image_shape, self.patch_size) if grid is None else grid
        ys, xs = self.grid_nodes(grid)
        coeffs = self.parameters_at(ys, xs)
        psfs = psf_batch(self.optics, self.nolls, coeffs.reshape(-1, len(self.nolls)), self.psf_size)
        return psfs.reshape(len(ys), len(xs), self.psf_size, self.psf_size), ys, xs


def default_grid(shape: tuple[int, int], patch_size: int) -> tuple[int, int]:
    """Deconvolution grid with cells of about two patches (the map's resolution after median filtering)."""
    cell = 2 * patch_size
    return tuple(int(np.clip(round(n / cell), 1, 16)) for n in shape)


def sampling_scale(image_optics: Optics, model_optics: Optics) -> float:
    """Factor by which the image must be zoomed to match the model's sampling of the diffraction limit.

    The PSF shape depends only on the Zernike coefficients and on the pixel size in units of λ/NA, so
    an image at another pixel size, NA or wavelength is resampled to the model's ``pixel·NA/λ``.
    """
    return (image_optics.pixel_size * image_optics.na / image_optics.wavelength) / \
           (model_optics.pixel_size * model_optics.na / model_optics.wavelength)


def window_starts(length: int, patch: int, stride: int) -> np.ndarray:
    """First pixels of the sliding windows along one axis: every ``stride``, plus one flush with the far edge."""
    starts = np.arange(0, length - patch + 1, stride)
    if starts[-1] != length - patch:          # cover the far edge too
        starts = np.append(starts, length - patch)
    return starts


def patch_centres(shape: tuple[int, int], patch: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (rows, cols) of the patch centres of the sliding window: the map's grid."""
    return tuple(window_starts(n, patch, stride) + (patch - 1) / 2 for n in shape)


def fill_uninformative(values: np.ndarray, informative: np.ndarray) -> np.ndarray:
    """Replace entries of each (my, mx) plane where ``informative`` is False by the nearest informative entry."""
    if informative.all():
        return values.copy()
    _, (iy, ix) = ndimage.distance_transform_edt(~informative, return_indices=True)
    return values[:, iy, ix]


def estimate_psf_map(image, model: PSFModel | str | None = None, stride: int | None = None,
                     optics: Optics | None = None, device: str = "cpu", median_size: int = 3,
                     progress: Progress | None = None) -> PSFMap:
    """Estimate the local PSF parameters of ``image`` with the CNN, patch by patch.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Blurred image (any real dtype; raw intensities).
    model : PSFModel or path, optional
        ONNX model; default: the bundled model.
    stride : int, optional
        Window step in *model* pixels (default: half a patch).
    optics : Optics, optional
        Optics of the image; default: the model's optics. Images whose sampling ``pixel·NA/λ`` differs
        from the model's are resampled; ratios outside the model's ``pixel_size_range`` are refused.
    device : {'cpu', 'gpu', 'auto'}
        ONNX Runtime execution provider (CUDA for 'gpu'/'auto' when available).
    median_size : int
        Size of the median filter applied to the filled map (1 disables it).
    progress : callable, optional
        ``progress(fraction, message)``.
    """
    img = np.asarray(check_image(np.asarray(image)), dtype=np.float32)
    net = model if isinstance(model, PSFModel) else PSFModel(model, device=device)
    cfg = net.config
    optics = optics or cfg.optics
    scale = sampling_scale(optics, cfg.optics)
    lo, hi = cfg.pixel_size_range
    if not lo <= scale <= hi:
        raise ValueError(f"optics: the image samples the PSF at {scale:.2f}x the model's pixel size "
                         f"(pixel·NA/λ); this model accepts {lo}–{hi}x. Check --pixel-size/--na/--wavelength")
    if float(img.max()) <= float(img.min()):
        raise ValueError("image is constant (e.g. all zero): there is no structure to estimate blur from")
    work = ndimage.zoom(img, scale, order=1) if abs(scale - 1) > 1e-3 else img
    p = cfg.patch_size
    if min(work.shape) < p:
        raise ValueError(f"image of {img.shape[0]}x{img.shape[1]} pixels is smaller than one "
                         f"{round(p / scale)}x{round(p / scale)} patch of the model")
    stride = stride or p // 2
    if not 1 <= stride <= p:
        raise ValueError(f"stride must be between 1 and the patch size {p}, got {stride}")
    ys, xs = window_starts(work.shape[0], p, stride), window_starts(work.shape[1], p, stride)
    windows = sliding_window_view(work, (p, p))[np.ix_(ys, xs)].reshape(-1, p, p)
    if progress:
        progress(0.0, f"PSF map: {len(windows)} patches on {net.provider}")
    pred = net.predict(windows)
    shape = (len(ys), len(xs))
    raw = pred.params.T.reshape(-1, *shape)
    conf = pred.info.reshape(shape).astype(np.float32)
    informative = conf >= 0.5
    if not informative.any():
        raise ValueError("no patch carries blur information (blank or very noisy image)")
    filled = fill_uninformative(raw, informative)
    filtered = np.stack([ndimage.median_filter(f, size=median_size, mode="nearest") for f in filled]) \
        if median_size > 1 else filled
    # defocus is estimated >= 0 by construction; keep filtered values in the model's ranges
    lows = np.array([q.low for q in cfg.parameters])[:, None, None]
    highs = np.array([q.high for q in cfg.parameters])[:, None, None]
    psf_size = int(np.ceil(cfg.psf_size / scale)) | 1
    if progress:
        progress(1.0, "PSF map done")
    return PSFMap(parameters=np.clip(filtered, lows, highs).astype(np.float32), raw=raw.astype(np.float32),
                  std=pred.std.T.reshape(-1, *shape).astype(np.float32), confidence=conf, informative=informative,
                  centres_y=(ys + (p - 1) / 2) / scale, centres_x=(xs + (p - 1) / 2) / scale,
                  names=cfg.names, units=cfg.units, nolls=cfg.nolls, patch_size=int(round(p / scale)),
                  stride=int(round(stride / scale)), optics=optics, psf_size=min(psf_size, _odd_floor(min(img.shape))),
                  image_shape=img.shape, provider=net.provider,
                  info={"model": str(net.path), "model_version": cfg.version, "sampling_scale": scale,
                        "median_size": median_size})


def _odd_floor(n: int) -> int:
    return n if n % 2 else n - 1
