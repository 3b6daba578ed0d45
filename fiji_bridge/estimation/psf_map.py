"""PSF-parameter maps: sliding-window CNN inference (ONNX Runtime), gap filling, median filtering, PSF grids."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from fiji_bridge import validation
from fiji_bridge.estimation.model import PSFModel
from fiji_bridge.optics.parameters import Optics, defocus_to_z
from fiji_bridge.optics.psf import psf_batch
from fiji_bridge.estimation.resample import resample_rows, window_block_means
from fiji_bridge.restoration.sv_convolution import check_image, node_centres
from fiji_bridge.validation import Progress, real_image_dtype


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
    #: Probability that the patch's defocus is beyond the top of the model's range (models that say so).
    beyond: np.ndarray | None = None
    #: Patches whose estimate was used as it is: informative, within range, predicted σ small enough;
    #: the others were filled from their nearest reliable neighbour (None: same as ``informative``).
    reliable: np.ndarray | None = None

    @property
    def out_of_range(self) -> np.ndarray:
        """(my, mx) bool: informative patches whose blur is beyond what the model reads (shown at the top of
        its range in ``parameters``)."""
        if self.beyond is None:
            return np.zeros(self.confidence.shape, bool)
        return (self.beyond >= 0.5) & self.informative

    @property
    def filled(self) -> np.ndarray:
        """(my, mx) bool: informative patches within range whose estimate was too uncertain to use (``reliable``
        False) and was replaced by their nearest reliable neighbour's."""
        if self.reliable is None:
            return np.zeros(self.confidence.shape, bool)
        return self.informative & ~self.out_of_range & ~self.reliable

    def parameter(self, name: str) -> np.ndarray:
        if name not in self.names:
            raise ValueError(f"no parameter {name!r} in this map (has {self.names})")
        return self.parameters[self.names.index(name)]

    def depth_um(self) -> np.ndarray:
        """|defocus| as axial distance from focus in µm (non-paraxial, vectorial-calibrated; `fiji_bridge.defocus_to_z`)."""
        return np.abs(defocus_to_z(self.parameter("defocus"), self.optics)).astype(np.float32)

    def to_stack(self) -> tuple[np.ndarray, list[str], dict]:
        """(stack, slice labels, metadata) for an ImageJ stack: one slice per parameter, then the
        information confidence and the depth map (µm). Map pixels are ``stride`` image pixels apart."""
        planes = [self.parameters, self.confidence[None], self.depth_um()[None]]
        labels = [*self.names, "confidence", "depth_um"]
        units = [*self.units, "probability", "µm"]
        if self.beyond is not None:        # models that say where blur is beyond their range
            planes += [self.std[:1], self.out_of_range[None], self.reliable[None]]
            labels += [f"{self.names[0]}_sigma", "out_of_range", "reliable"]
            units += [self.units[0], "flag", "flag"]
        stack = np.concatenate(planes).astype(np.float32)
        meta = {"parameters": self.names, "units": units,
                "patch_size_px": self.patch_size, "stride_px": self.stride,
                "first_centre_px": [float(self.centres_y[0]), float(self.centres_x[0])],
                "centres_y_px": [float(v) for v in self.centres_y], "centres_x_px": [float(v) for v in self.centres_x],
                "nolls": list(self.nolls), "psf_size_px": self.psf_size,
                "image_shape": list(self.image_shape), "optics": self.optics.to_dict(), **self.info}
        return stack, labels, meta

    @classmethod
    def from_stack(cls, stack: np.ndarray, labels: list[str], meta: dict) -> "PSFMap":
        """The map back from `to_stack`'s (stack, labels, metadata), e.g. read from a saved map file: the
        filtered parameters, confidence, σ and flags it holds (raw estimates are not saved: ``raw`` is the
        filtered map). Raises ValueError when the metadata is not a SemiBlind map's."""
        try:
            names = list(meta["parameters"])
            planes = {label: np.asarray(plane, np.float32) for label, plane in zip(labels, stack)}
            params = np.stack([planes[n] for n in names])
            confidence = planes["confidence"]
            informative = confidence >= 0.5
            std = planes.get(f"{names[0]}_sigma")
            std = np.zeros_like(params) if std is None else np.concatenate([std[None], np.zeros_like(params[1:])])
            beyond = planes.get("out_of_range")
            reliable = planes.get("reliable")
            return cls(parameters=params, raw=params.copy(), std=std, confidence=confidence, informative=informative,
                       centres_y=np.asarray(meta["centres_y_px"], float), centres_x=np.asarray(meta["centres_x_px"], float),
                       names=names, units=list(meta["units"][:len(names)]), nolls=[int(j) for j in meta["nolls"]],
                       patch_size=int(meta["patch_size_px"]), stride=int(meta["stride_px"]),
                       optics=Optics.from_dict(meta["optics"]), psf_size=int(meta["psf_size_px"]),
                       image_shape=tuple(int(n) for n in meta["image_shape"]),
                       info={k: v for k, v in meta.items() if k in ("model", "model_version", "sampling_scale")},
                       beyond=None if beyond is None else beyond.astype(np.float32),
                       reliable=None if reliable is None else reliable >= 0.5)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"not a SemiBlind PSF map (written by this version): missing or bad {exc}") from None

    def grid_nodes(self, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Node coordinates (pixels) of a deconvolution PSF grid: centres of a regular (gy, gx) partition."""
        return node_centres(self.image_shape[0], grid[0]), node_centres(self.image_shape[1], grid[1])

    @property
    def spacing(self) -> float:
        """Distance between neighbouring patch centres in image pixels: the size of a map pixel. ``stride`` is
        this rounded for maps read at another sampling (context models resample the image)."""
        for c in (self.centres_x, self.centres_y):
            if len(c) > 1:
                return float(c[1] - c[0])
        return float(self.stride)

    def parameters_at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Bilinear interpolation of the filtered map at the grid ``ys`` x ``xs`` -> (len(ys), len(xs), P)."""
        return self._at(self.parameters, ys, xs)

    def beyond_at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray | None:
        """`beyond` interpolated like `parameters_at` -> (len(ys), len(xs)); None for models without a range head."""
        return None if self.beyond is None else self._at(self.beyond[None], ys, xs)[..., 0]

    def _at(self, planes: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        fy = np.interp(ys, self.centres_y, np.arange(len(self.centres_y)))
        fx = np.interp(xs, self.centres_x, np.arange(len(self.centres_x)))
        yy, xx = np.meshgrid(fy, fx, indexing="ij")
        return np.stack([ndimage.map_coordinates(p, [yy, xx], order=1, mode="nearest") for p in planes], -1)

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
        grid = default_grid(self.image_shape) if grid is None else grid
        ys, xs = self.grid_nodes(grid)
        coeffs = self.parameters_at(ys, xs)
        psfs = psf_batch(self.optics, self.nolls, coeffs.reshape(-1, len(self.nolls)), self.psf_size)
        return psfs.reshape(len(ys), len(xs), self.psf_size, self.psf_size), ys, xs


def default_grid(shape: tuple[int, int], cell: int = 128) -> tuple[int, int]:
    """Deconvolution grid with nodes about ``cell`` pixels apart (at most 16 a side): fine enough to follow
    blur that changes across a field (each cell spans a few map strides), coarse enough to stay cheap."""
    return tuple(int(np.clip(round(n / cell), 1, 16)) for n in shape)


def sampling_scale(image_optics: Optics, model_optics: Optics) -> float:
    """Factor by which the image must be zoomed to match the model's sampling of the diffraction limit.

    The PSF shape depends only on the Zernike coefficients and on the pixel size in units of λ/NA, so
    an image at another pixel size, NA or wavelength is resampled to the model's ``pixel·NA/λ``.
    """
    return (image_optics.pixel_size * image_optics.na / image_optics.wavelength) / \
           (model_optics.pixel_size * model_optics.na / model_optics.wavelength)


def default_stride(patch: int) -> int:
    """Default window step: one patch (64 px for 64-px patches; windows side by side). Measured with
    ``benchmarks/evaluate_pipeline.py --size 512`` (32 cases, 2026-11-25): float network (a) 5.099 / 5.094 /
    5.066 dB at strides 32 / 48 / 64; int8 network 5.091 dB at 48 and 5.065 at 64. 64 costs 0.03 dB against
    48 (issue 15 allows 0.1) for 0.58x the patches, which brings the map to a tenth of a default run
    (``benchmarks/bench_rl.py``: 0.12 / 0.10 of the run at 1024² / 2048² with stride 48). The same holds for
    the envelope model (context windows): against half a patch, one patch changed the 1024² envelope benchmark's
    restorations by +0.10 dB on average (−0.32 to +1.23 dB over 36 cases, the same map Spearman and RMSE) for a
    quarter of the patches, which had made its map 15 % of a default 2048² run (2026-12-07)."""
    return patch


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


def zoom_coordinates(n_in: int, n_out: int) -> np.ndarray:
    """Input coordinates of the ``n_out`` output samples of `scipy.ndimage.zoom` along one axis (its
    ``grid_mode=False`` convention: first and last samples aligned)."""
    return np.arange(n_out) * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(1)


def _resample_linear(a: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``a`` at fractional ``coords`` along ``axis`` (as order-1 `ndimage.zoom`)."""
    if a.shape[axis] == 1:
        return np.repeat(a, len(coords), axis=axis)
    i0 = np.clip(np.floor(coords).astype(int), 0, a.shape[axis] - 2)
    t = (coords - i0).astype(np.float32)
    shape = [1] * a.ndim
    shape[axis] = -1
    t = t.reshape(shape)
    return np.take(a, i0, axis=axis) * (1 - t) + np.take(a, i0 + 1, axis=axis) * t


def _work_rows(image, shape: tuple[int, int], work_shape: tuple[int, int], r0: int, r1: int) -> np.ndarray:
    """Rows ``r0:r1`` of the image resampled to the model's sampling, full width, read from ``image``
    (an array or a lazy image) one band at a time."""
    if work_shape == shape:
        return check_image(np.asarray(image[r0:r1]), "image").astype(np.float32, copy=False)
    cy = zoom_coordinates(shape[0], work_shape[0])[r0:r1]
    i0, i1 = int(np.floor(cy[0])), min(int(np.floor(cy[-1])) + 2, shape[0])
    band = check_image(np.asarray(image[i0:i1]), "image").astype(np.float32, copy=False)
    band = _resample_linear(band, cy - i0, axis=0)
    return _resample_linear(band, zoom_coordinates(shape[1], work_shape[1]), axis=1)


def _row_bands(ys: np.ndarray, patch: int, width: int, n_cols: int) -> list[slice]:
    """Group window rows into bands of at most `BAND_PIXELS` image pixels (first window start to last
    window end, ``width`` wide) and `BAND_WINDOWS` windows of ``n_cols`` per row (at least one row), so
    that one band of the image and of its patches is in memory at a time."""
    bands, first = [], 0
    for i in range(1, len(ys) + 1):
        if i == len(ys) or (ys[i] + patch - ys[first]) * width > BAND_PIXELS \
                or (i + 1 - first) * n_cols > BAND_WINDOWS:
            bands.append(slice(first, i))
            first = i
    return bands


#: Most image pixels and most patches of one band read and run at a time by `estimate_psf_map`
#: (512 patches of 64² float32 = 8 MiB, plus their scaled and normalised copies: the map's peak memory
#: stays below the deconvolution's; 4096 made the map the peak of a whole run, +310 MB at 2048², issue 15).
BAND_PIXELS = 1 << 24
BAND_WINDOWS = 512


def estimate_psf_map(image, model: PSFModel | str | None = None, stride: int | None = None,
                     optics: Optics | None = None, device: str = "cpu", median_size: int = 3,
                     progress: Progress | None = None) -> PSFMap:
    """Estimate the local PSF parameters of ``image`` with the CNN, patch by patch.

    The image is read in bands of rows, so it may be a lazy image (`fiji_bridge.io.tiff.LazyImage`, a
    memory map, a zarr array) larger than memory: peak memory is one band plus the map.

    Parameters
    ----------
    image : ndarray or lazy image, shape (H, W)
        Blurred image (any real dtype; raw intensities); anything with ``.shape`` and row slicing.
    model : PSFModel or path, optional
        ONNX model; default: the bundled model.
    stride : int, optional
        Window step in *model* pixels (default: `default_stride`, one patch).
    optics : Optics, optional
        Optics of the image; default: the model's optics. Images whose sampling ``pixel·NA/λ`` differs
        from the model's are resampled (linearly, as ``ndimage.zoom(order=1)``); ratios outside the
        model's ``pixel_size_range`` are refused.
    device : {'cpu', 'gpu', 'auto'}
        ONNX Runtime execution provider (CUDA for 'gpu'/'auto' when available).
    median_size : int
        Size of the median filter applied to the filled map (1 disables it).
    progress : callable, optional
        ``progress(fraction, message)``.
    """
    if stride is not None:
        validation.integer("stride", stride, minimum=1)
    if optics is not None and not isinstance(optics, Optics):
        raise ValueError(f"optics must be an Optics, e.g. fiji_bridge.Optics(na=0.75, wavelength=0.53, "
                         f"pixel_size=0.16), got {optics!r}")
    if not (hasattr(image, "shape") and hasattr(image, "__getitem__")):
        image = np.asarray(image)
    shape = tuple(int(n) for n in image.shape)
    if len(shape) != 2:
        raise ValueError(f"image must be a 2-D array, got {len(shape)}-D of shape {shape}")
    if min(shape) < 2:
        raise ValueError(f"image is too small: shape {shape}")
    net = model if isinstance(model, PSFModel) else PSFModel(model, device=device)
    cfg = net.config
    optics = optics or cfg.default_image_optics
    if cfg.input_channels > 1:
        return _estimate_with_context(image, shape, net, stride, optics, median_size, progress)
    scale = sampling_scale(optics, cfg.optics)
    lo, hi = cfg.pixel_size_range
    if not lo <= scale <= hi:
        raise ValueError(f"optics: the image samples the PSF at {scale:.2f}x the model's pixel size "
                         f"(pixel·NA/λ); this model accepts {lo}–{hi}x. Check --pixel-size/--na/--wavelength")
    work_shape = shape if abs(scale - 1) <= 1e-3 else tuple(int(round(n * scale)) for n in shape)
    p = cfg.patch_size
    if min(work_shape) < p:
        raise ValueError(f"image of {shape[0]}x{shape[1]} pixels is smaller than one "
                         f"{round(p / scale)}x{round(p / scale)} patch of the model")
    stride = stride or default_stride(p)
    if not 1 <= stride <= p:
        raise ValueError(f"stride must be between 1 and the patch size {p}, got {stride}")
    ys, xs = window_starts(work_shape[0], p, stride), window_starts(work_shape[1], p, stride)
    if progress:
        progress(0.0, f"PSF map: {len(ys) * len(xs)} patches on {net.provider}")
    params, stds, infos = [], [], []
    lowest, highest = np.inf, -np.inf
    bands = _row_bands(ys, p, work_shape[1], len(xs))
    for k, band in enumerate(bands):
        r0 = int(ys[band][0])
        rows = _work_rows(image, shape, work_shape, r0, int(ys[band][-1]) + p)
        lowest, highest = min(lowest, float(rows.min())), max(highest, float(rows.max()))
        windows = sliding_window_view(rows, (p, p))[np.ix_(ys[band] - r0, xs)].reshape(-1, p, p)
        pred = net.predict(windows)
        params.append(pred.params), stds.append(pred.std), infos.append(pred.info)
        if progress:
            progress((k + 1) / len(bands), f"PSF map: band {k + 1}/{len(bands)}")
    if highest <= lowest:
        raise ValueError("image is constant (e.g. all zero): there is no structure to estimate blur from")
    grid = (len(ys), len(xs))
    raw = np.concatenate(params).T.reshape(-1, *grid)
    std = np.concatenate(stds).T.reshape(-1, *grid)
    conf = np.concatenate(infos).reshape(grid).astype(np.float32)
    if not np.all(np.isfinite(raw)) or not np.all(np.isfinite(conf)):
        raise ValueError(f"model {net.path.name} produced non-finite output (NaN/inf): the model file is broken")
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
    # work pixel u sits at input pixel u·(n_in − 1)/(n_out − 1) (zoom_coordinates)
    to_image = [(n - 1) / max(m - 1, 1) for n, m in zip(shape, work_shape)]
    return PSFMap(parameters=np.clip(filtered, lows, highs).astype(np.float32), raw=raw.astype(np.float32),
                  std=std.astype(np.float32), confidence=conf, informative=informative,
                  centres_y=(ys + (p - 1) / 2) * to_image[0], centres_x=(xs + (p - 1) / 2) * to_image[1],
                  names=cfg.names, units=cfg.units, nolls=cfg.nolls, patch_size=int(round(p / scale)),
                  stride=int(round(stride / scale)), optics=optics, psf_size=min(psf_size, _odd_floor(min(shape))),
                  image_shape=shape, provider=net.provider,
                  info={"model": str(net.path), "model_version": cfg.version, "sampling_scale": scale,
                        "median_size": median_size})


def _odd_floor(n: int) -> int:
    return n if n % 2 else n - 1


#: Largest predicted σ of defocus (waves RMS, as calibrated by the model's ``sigma_scale``) at which a patch's
#: estimate is used as it is; noisier estimates are replaced by their nearest reliable neighbour (context
#: models, which predict σ per patch). v2.0 used 0.12 of its network's own σ (0.146 once calibrated); on the
#: 1024² envelope benchmark 0.2 or no limit helped 0→1.5 tilts at 300 photons but cost the 0→0.35 and 0→0.8
#: tilts. For v2.1 (σ scale 1.10) 0.15 is 0.136 of its network's σ.
RELIABLE_DEFOCUS_SIGMA = 0.15
#: Share of the informative patches, filled from their readable neighbours for a large σ, from which the map warns.
#: On the 1024² envelope benchmark (v2.1) it is 0-0.36 on every specimen but the phase-contrast photograph at
#: 300 photons (0.74-0.79) and one piecewise layout (0.49).
UNRELIABLE_WARNING_SHARE = 0.5


def _estimate_with_context(image, shape: tuple[int, int], net: PSFModel, stride: int | None, optics: Optics,
                           median_size: int, progress: Progress | None) -> PSFMap:
    """`estimate_psf_map` for models that read a wider context window and any sampling in their range.

    The image is resampled to the model's sampling as a whole (not band by band as for v1 models), so a lazy
    image is read into memory here."""
    cfg = net.config
    sampling = optics.pixel_size * optics.na / optics.wavelength
    lo, hi = cfg.sampling_range
    if not lo <= sampling <= hi:
        raise ValueError(f"optics: the image samples the PSF at pixel·NA/λ = {sampling:.3f} "
                         f"(pixel size {optics.pixel_size:g} µm, NA {optics.na:g}, wavelength "
                         f"{optics.wavelength:g} µm); this model reads {lo:g}–{hi:g}")
    scale = sampling / cfg.sampling
    p, k = cfg.patch_size, cfg.context_factor
    work_shape = tuple(max(int(round(n * scale)), 1) for n in shape)
    if min(work_shape) < p:
        raise ValueError(f"image of {shape[0]}x{shape[1]} pixels is smaller than one "
                         f"{round(p / scale)}x{round(p / scale)} patch of the model")
    stride = stride or default_stride(p)
    if not 1 <= stride <= p:
        raise ValueError(f"stride must be between 1 and the patch size {p}, got {stride}")
    if hasattr(image, "dtype"):
        real_image_dtype("image", image.dtype)           # bool, complex, text: refused before reading
    margin = (k - 1) * p // 2
    ys, xs = window_starts(work_shape[0], p, stride), window_starts(work_shape[1], p, stride)
    if progress:
        progress(0.0, f"PSF map: {len(ys) * len(xs)} patches on {net.provider}")
    log_sampling = float(np.log(scale))
    preds = []
    lowest, highest = np.inf, -np.inf
    bands = _row_bands(ys, k * p, work_shape[1] + 2 * margin, len(xs))
    for n, band in enumerate(bands):
        # the wide windows of this band span rows [y0, y1) of the image resampled and reflect-padded by `margin`;
        # only the resampled rows they map to are made (`resample_rows` reads just the input rows those need)
        y0, y1 = int(ys[band][0]), int(ys[band][-1]) + k * p
        rows = _reflect(np.arange(y0, y1) - margin, work_shape[0])
        r0, r1 = int(rows.min()), int(rows.max()) + 1
        with np.errstate(over="ignore", invalid="ignore"):
            work = resample_rows(image, work_shape, r0, r1)
        if not np.all(np.isfinite(work)):
            raise ValueError("image contains NaN or inf (or values beyond the float32 range)")
        lowest, highest = min(lowest, float(work.min())), max(highest, float(work.max()))
        padded = np.pad(work[rows - r0], ((0, 0), (margin, margin)), mode="reflect")
        fine_view = sliding_window_view(padded[:, margin:margin + work_shape[1]], (p, p))
        for y in ys[band]:
            fine = fine_view[y - y0 + margin, xs]
            # the wide windows [y - margin, y + p + margin) x [x - margin, x + p + margin) of the image (in
            # `padded`: rows from y - y0, columns from x), block-averaged to patches; one row of windows at a
            # time, so the network's inputs in memory are one row's
            context = window_block_means(padded[y - y0:y - y0 + k * p], [0], xs, k * p, k)
            preds.append(net.predict(fine, context, log_sampling))
        if progress:
            progress((n + 1) / len(bands), f"PSF map: band {n + 1}/{len(bands)}")
    if highest <= lowest:
        raise ValueError("image is constant (e.g. all zero): there is no structure to estimate blur from")
    grid = (len(ys), len(xs))
    raw = np.concatenate([q.params for q in preds]).T.reshape(-1, *grid)
    std = np.concatenate([q.std for q in preds]).T.reshape(-1, *grid)
    conf = np.concatenate([q.info for q in preds]).reshape(grid).astype(np.float32)
    beyond = (np.concatenate([q.beyond for q in preds]).reshape(grid).astype(np.float32)
              if preds[0].beyond is not None else np.zeros(grid, np.float32))
    if not np.all(np.isfinite(raw)) or not np.all(np.isfinite(conf)):
        raise ValueError(f"model {net.path.name} produced non-finite output (NaN/inf): the model file is broken")
    informative = conf >= 0.5
    if not informative.any():
        raise ValueError("no patch carries blur information (blank or very noisy image)")
    top = cfg.parameters[0].high
    raw = raw.copy()
    out_of_range = informative & (beyond >= 0.5)
    raw[0][out_of_range] = top                    # at least the top of the range; flagged, not hidden
    # What the model cannot read -- a large predicted σ, or blur beyond its range -- takes the estimates of the
    # nearest readable patches. Deconvolving flagged patches at the top of the range instead (and filling their
    # neighbours from them) collapsed a smooth phase-contrast photograph that the range head had falsely
    # flagged: 15.7 dB in, 1.9 dB out on a 0->0.35 tilt (18.9 dB filled; benchmarks/evaluate_envelope.py).
    # Too little blur restores less; too much rings. Only when nothing is readable is the top used, as warned.
    reliable = informative & ~out_of_range & (std[0] <= RELIABLE_DEFOCUS_SIGMA)
    if not reliable.any():
        reliable = informative & ~out_of_range
    if not reliable.any():
        reliable = informative
    filled = fill_uninformative(np.concatenate([raw, std[:1]]), reliable)
    sigma = ndimage.median_filter(filled[-1], size=median_size, mode="nearest") if median_size > 1 else filled[-1]
    filled = filled[:-1]
    filtered = np.stack([ndimage.median_filter(f, size=median_size, mode="nearest") for f in filled]) \
        if median_size > 1 else filled
    lows = np.array([q.low for q in cfg.parameters])[:, None, None]
    highs = np.array([q.high for q in cfg.parameters])[:, None, None]
    params = np.clip(filtered, lows, highs).astype(np.float32)
    to_image = [n / m for n, m in zip(shape, work_shape)]         # area-aligned grids (resample)
    centre = lambda starts, f: (starts + p / 2) * f - 0.5          # noqa: E731 - work pixel centre -> image
    centres_y, centres_x = centre(ys, to_image[0]), centre(xs, to_image[1])
    params, near_info = blend_near_focus(image, net, optics, params, centres_y, centres_x, median_size, sigma)
    if progress:
        progress(1.0, "PSF map done")
    if out_of_range.any():
        fate = (f"deconvolved at {top:g}" if not (informative & ~out_of_range).any() else
                "given the estimates of their nearest readable neighbours")
        warnings.warn(f"PSF map: {out_of_range.sum() / informative.sum():.0%} of the informative patches are blurred "
                      f"beyond {top:g} waves RMS of defocus, the top of the model's range; they are flagged "
                      f"(out_of_range) and {fate}", stacklevel=3)
    m = PSFMap(parameters=params, raw=raw.astype(np.float32), std=std.astype(np.float32), confidence=conf,
               informative=informative, centres_y=centres_y, centres_x=centres_x,
               names=cfg.names, units=cfg.units, nolls=cfg.nolls, patch_size=int(round(p / scale)),
               stride=int(round(stride / scale)), optics=optics,
               psf_size=psf_size_for(params, cfg.names, sampling, min(shape)), image_shape=shape,
               provider=net.provider, beyond=beyond, reliable=reliable,
               info={"model": str(net.path), "model_version": cfg.version, "sampling": sampling,
                     "sampling_scale": scale, "median_size": median_size,
                     "out_of_range_fraction": float(out_of_range.sum() / max(informative.sum(), 1)),
                     "unreliable_fraction": float(1.0 - reliable.sum() / reliable.size), **near_info})
    filled_share = float(m.filled.sum() / informative.sum())
    if filled_share >= UNRELIABLE_WARNING_SHARE:
        # said, not hidden: with few readable patches the fill spreads each one far (at NA 1.4, on a 0->1.5-wave
        # tilt of a smooth photograph, one over-read patch took over two of seven columns of a 7x7 map and
        # the restoration fell below its input: benchmarks/evaluate_envelope.py)
        warnings.warn(f"PSF map: {filled_share:.0%} of the informative patches are too uncertain to read (predicted "
                      f"σ of defocus above {RELIABLE_DEFOCUS_SIGMA:g} waves RMS) and take the estimates of their "
                      f"nearest readable neighbours; the map rests on the other "
                      f"{int(reliable.sum())} patches (its 'reliable' slice)", stacklevel=3)
    return m


def blend_near_focus(image, net: PSFModel, optics: Optics, params: np.ndarray, centres_y: np.ndarray,
                     centres_x: np.ndarray, median_size: int, sigma: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """``params`` (P, my, mx) of ``net``'s map with its near-focus model's map (``near_focus_model``) where
    ``net`` reads little defocus, and what was done (for the map's ``info``).

    A model trained on 0–0.35 waves only reads that range more finely than one trained on 0–1.6 (its labels
    are denser and its PSFs smaller), but saturates beyond it, reading 0.27–0.32 where the truth is 0.8.
    So the choice follows the wide model: weight 1 on the near-focus map where ``net`` reads at most
    ``near_focus_blend[0]`` (less ``near_focus_sigma`` times its predicted σ ``sigma``), 0 from
    ``near_focus_blend[1]`` on, linear in between (benchmarks/evaluate_envelope.py measures the blend; a
    second ramp on the near-focus model's own reading, near its saturation, was measured worse). A near-focus
    model with a range head says itself where the blur is beyond what it reads: its weight is further
    multiplied by its probability of being within range (the wide model's σ-shifted reading alone capped
    0.4–0.6 waves at the near model's saturation).
    Images whose sampling the near-focus model refuses, or smaller than its patch, keep ``net``'s map."""
    near = net.near_focus
    if near is None:
        return params, {}
    ncfg = near.config
    if ncfg.names != net.config.names:
        raise ValueError(f"model {net.path.name}: its near-focus model {near.path.name} estimates "
                         f"{ncfg.names}, not {net.config.names}")
    shape = tuple(int(n) for n in image.shape)
    if ncfg.input_channels > 1:       # a context model reads a range of samplings pixel·NA/λ
        sampling = optics.pixel_size * optics.na / optics.wavelength
        lo, hi = ncfg.sampling_range
        if not lo <= sampling <= hi:
            return params, {"near_focus": f"not used: it reads samplings {lo:g}-{hi:g}, this image {sampling:.3f}"}
        scale = sampling / ncfg.sampling
    else:
        scale = sampling_scale(optics, ncfg.optics)
        lo, hi = ncfg.pixel_size_range
        if not lo <= scale <= hi:
            return params, {"near_focus": f"not used: it reads samplings {lo:g}-{hi:g}x its own, this image {scale:.2f}x"}
    if min(shape) * scale < ncfg.patch_size:
        return params, {"near_focus": "not used: the image is smaller than one of its patches"}
    with warnings.catch_warnings():
        # where the near-focus model reads blur beyond its range is this blend's business (the wide model
        # takes over there), not a warning for the user
        warnings.simplefilter("ignore")
        fine = estimate_psf_map(image, near, optics=optics, median_size=median_size)
    at = fine.parameters_at(centres_y, centres_x).transpose(2, 0, 1)
    a, b = net.config.near_focus_blend or (0.0, 0.0)
    # the choice reads the wide model's defocus `near_focus_sigma` predicted σ (``sigma``) lower: an uncertain
    # "more blur" hands over to the near-focus model (smooth photographs read 0.2 waves high, and blurring more
    # than there is rings, where blurring less only restores less); the wide model's own values stay as read
    shifted = params[0] - net.config.near_focus_sigma * (sigma if sigma is not None else 0.0)
    weight = np.clip((b - shifted) / (b - a), 0.0, 1.0)
    beyond = fine.beyond_at(centres_y, centres_x)
    if beyond is not None:
        weight = weight * (1.0 - beyond)          # a probability, interpolated bilinearly: stays in [0, 1]
    blended = (weight * at + (1 - weight) * params).astype(np.float32)
    info = {"model": str(near.path), "model_version": ncfg.version, "blend": [a, b],
            "sigma": net.config.near_focus_sigma, "weighted_fraction": float(weight.mean())}
    if beyond is not None:
        info["beyond_its_range_fraction"] = float(np.mean(beyond >= 0.5))
    return blended, {"near_focus": info}


def _reflect(index: np.ndarray, n: int) -> np.ndarray:
    """Indices into ``n`` samples of positions beyond them mirrored as ``np.pad(mode='reflect')`` does
    (edge sample not repeated; one reflection, enough for pads shorter than the axis)."""
    index = np.abs(index)
    return np.where(index >= n, 2 * (n - 1) - index, index)


def psf_size_for(parameters: np.ndarray, names: list[str], sampling: float, limit: int) -> int:
    """Odd PSF side (image pixels) that holds the widest PSF of a map.

    The geometric blur radius of a Zernike defocus ``c`` (waves RMS) is ``4·√3·c`` λ/NA (slope of
    √3(2ρ²−1) at the pupil edge), an astigmatism ``a`` adds up to ``2·√6·|a|``; 3 λ/NA more keep the
    diffraction rings. ``sampling`` is pixel·NA/λ; the result is at most ``limit`` (odd).
    """
    radius = 3.0
    if "defocus" in names:
        radius += 4 * np.sqrt(3) * float(np.max(np.abs(parameters[names.index("defocus")])))
    for name in ("astigmatism_0", "astigmatism_45"):
        if name in names:
            radius += 2 * np.sqrt(6) * float(np.max(np.abs(parameters[names.index(name)])))
    size = 2 * int(np.ceil(radius / sampling)) + 1
    return min(max(size, 3), _odd_floor(limit))
