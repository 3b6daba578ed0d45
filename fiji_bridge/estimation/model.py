"""Loading a PSF-regression model (ONNX + JSON config) and running it with ONNX Runtime."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from fiji_bridge.restoration.backend import thread_limit
from fiji_bridge.estimation.model_config import ModelConfig, assemble_inputs
from fiji_bridge.settings import check_device

log = logging.getLogger(__name__)

#: Patches per ONNX Runtime call. Small batches keep the activations in the CPU caches and ORT's arena small:
#: a 2048² map took 1.0 s and +1 MB of peak RSS at 16 against 1.7 s and +50 MB at 64 (int8 network, 1 thread).
BATCH_SIZE = 16

DEFAULT_MODEL_NAME = "semiblind_default"


def default_model_path() -> Path:
    """Path of the ONNX model bundled with the package."""
    return Path(str(resources.files("fiji_bridge.models").joinpath(f"{DEFAULT_MODEL_NAME}.onnx")))


def config_path_for(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


@dataclass
class Prediction:
    """Model outputs for a batch of patches, in physical units."""

    params: np.ndarray        # (B, P) parameter values
    std: np.ndarray           # (B, P) predicted standard deviation (same units)
    info: np.ndarray          # (B,) probability that the patch carries blur information
    beyond: np.ndarray | None = None   # (B,) probability that the blur is beyond the model's range (if it says)


def unit_scaled(patches: np.ndarray) -> np.ndarray:
    """``patches`` (B, P, P) as float32, each divided by a power of two that brings its largest magnitude
    into [0.5, 1) (exact; exponents computed in float64). Per-patch standardisation is invariant to this
    scaling, so network inputs are identical for any brightness, but their float32 statistics can then
    neither overflow (raw values ~1e20) nor underflow (~1e-20), and the std floor of `normalize_patches`
    is relative to the patch's brightness instead of absolute."""
    p = np.asarray(patches, dtype=np.float32)
    peak = np.abs(p).max(axis=(-2, -1), keepdims=True, initial=0.0).astype(np.float64)
    return np.ldexp(p, -np.frexp(peak)[1].astype(np.int32))


class PSFModel:
    """An ONNX PSF-regression model with its config.

    Parameters
    ----------
    path : path, optional
        ONNX file; its config is the JSON file of the same name. Default: the bundled model.
    device : {'cpu', 'gpu', 'auto'}
        'gpu' demands ONNX Runtime's CUDA execution provider, 'auto' uses it when available.
    precision : {'auto', 'float', 'int8'}
        'auto' runs the config's int8 copy (``int8_model``) on the CPU when there is one — 2.8x the patches
        per second, maps within 0.002 waves of the float network's (``tests/estimation/test_shipped_model.py``)
        — and the float network otherwise (always on the GPU); 'float' forces the float network, 'int8'
        demands the int8 copy.
    """

    def __init__(self, path: str | Path | None = None, device: str = "cpu", precision: str = "auto"):
        import onnxruntime as ort

        self.path = Path(path) if path is not None else default_model_path()
        if self.path.suffix.lower() != ".onnx":
            raise ValueError(f"model file must be an .onnx file, got {self.path}")
        if not self.path.is_file():
            raise ValueError(f"model file not found: {self.path}")
        self.config = ModelConfig.load(config_path_for(self.path))
        available = ort.get_available_providers()
        check_device(device)
        providers = ["CPUExecutionProvider"]
        if device in ("gpu", "auto") and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        elif device == "gpu":
            raise RuntimeError("device 'gpu' requested but ONNX Runtime has no CUDA execution provider "
                               "(install onnxruntime-gpu, or use --device auto)")
        self.network_path = self._network_path(precision, on_gpu=providers[0] == "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if thread_limit():
            options.intra_op_num_threads = thread_limit()
        try:
            self.session = ort.InferenceSession(str(self.network_path), sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types for corrupt files
            raise ValueError(f"cannot load {self.network_path.name} as an ONNX model: "
                             f"{str(exc).splitlines()[0]}") from None
        self.provider = self.session.get_providers()[0]
        self._check_signature()
        self._device, self._precision = device, precision
        self._near_focus: PSFModel | None = None

    @property
    def near_focus(self) -> "PSFModel | None":
        """The config's near-focus model (``near_focus_model``), loaded on first use with this model's device
        and precision; None when the config names none."""
        name = self.config.near_focus_model
        if name is None:
            return None
        if self._near_focus is None:
            path = self.path.with_name(name)
            if not path.is_file():
                raise ValueError(f"model {self.path.name}: its near-focus model {name} named in the config "
                                 f"is missing beside it")
            self._near_focus = PSFModel(path, device=self._device, precision=self._precision)
            if self._near_focus.config.near_focus_model:
                raise ValueError(f"model {self.path.name}: its near-focus model {name} must not have a "
                                 f"near-focus model of its own")
        return self._near_focus

    def _network_path(self, precision: str, on_gpu: bool) -> Path:
        """The ONNX file to run: the float model or its int8 copy (see the class docstring)."""
        if precision not in ("auto", "float", "int8"):
            raise ValueError(f"precision must be 'auto', 'float' or 'int8', got {precision!r}")
        name = self.config.int8_model
        if precision == "float" or (precision == "auto" and (on_gpu or name is None)):
            return self.path
        if name is None:
            raise ValueError(f"precision: model {self.path.name} has no int8 copy (python -m training quantize)")
        int8 = self.path.with_name(name)
        if int8.is_file():
            return int8
        if precision == "int8":
            raise ValueError(f"precision: the int8 copy {name} named in the config of {self.path.name} is missing")
        # not an error: the float network is the reference the int8 copy is measured against (a config copied
        # without its int8 file, say); only the map is slower
        log.info("model %s: its int8 copy %s named in the config is missing; running the float network",
                 self.path.name, name)
        return self.path

    @property
    def precision(self) -> str:
        """'int8' or 'float': the network that runs."""
        return "float" if self.network_path == self.path else "int8"

    def _check_signature(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        cfg = self.config
        if cfg.input_name not in inputs:
            raise ValueError(f"model {self.path.name}: input {cfg.input_name!r} from its config is missing")
        shape = inputs[cfg.input_name].shape
        if len(shape) != 4 or list(shape[1:]) != [cfg.input_channels, cfg.patch_size, cfg.patch_size]:
            raise ValueError(f"model {self.path.name}: input shape {shape} does not match its config "
                             f"(input_channels {cfg.input_channels}, patch_size {cfg.patch_size})")
        missing = set(cfg.outputs) - outputs
        if missing:
            raise ValueError(f"model {self.path.name}: outputs {sorted(missing)} from its config are missing")
        for out in self.session.get_outputs():          # one column per parameter of the config
            width = out.shape[1] if out.name in ("params", "log_var") and len(out.shape) == 2 else None
            if isinstance(width, int) and width != len(cfg.parameters):
                raise ValueError(f"model {self.path.name}: the network gives {width} values in {out.name!r} but its "
                                 f"config lists {len(cfg.parameters)} parameters {cfg.names}: the JSON does not "
                                 "belong to this ONNX file")

    def predict(self, patches: np.ndarray, context: np.ndarray | None = None,
                log_sampling: float | np.ndarray | None = None, batch_size: int = BATCH_SIZE) -> Prediction:
        """Run the model on raw patches of shape (B, P, P); normalisation is applied here.

        Models with a context window (``config.input_channels == 3``) also need ``context`` (B, P, P), the
        wider window block-averaged to a patch, and ``log_sampling``, log(camera sampling / model sampling).

        Each patch (and context window) is first divided by a power of two near its largest magnitude
        (`unit_scaled`), so the prediction does not depend on the brightness scale of the image.
        """
        if self.config.input_channels > 1 and context is None:
            raise ValueError(f"model {self.path.name} reads a context window: pass context= and log_sampling=")
        context = unit_scaled(context) if self.config.input_channels > 1 else None
        x = assemble_inputs(unit_scaled(patches), context, log_sampling)
        return self.predict_inputs(x, batch_size)

    def predict_inputs(self, x: np.ndarray, batch_size: int = BATCH_SIZE) -> Prediction:
        """Run the model on assembled network inputs (`fiji_bridge.estimation.model_config.assemble_inputs`)."""
        names = list(self.config.outputs)
        outs = [dict(zip(names, self.session.run(names, {self.config.input_name: x[i:i + batch_size]})))
                for i in range(0, len(x), batch_size)]

        def joined(name: str) -> np.ndarray:
            return np.concatenate([o[name] for o in outs]) if outs else np.zeros((0, 1), np.float32)

        norm = np.clip(joined("params"), -1, 1)
        std_norm = np.exp(0.5 * joined("log_var"))
        beyond = 1.0 / (1.0 + np.exp(-joined("range_logit")[:, 0])) if "range_logit" in names else None
        return Prediction(params=self.config.denormalize(norm), std=self.config.std_to_physical(norm, std_norm),
                          info=1.0 / (1.0 + np.exp(-joined("info_logit")[:, 0])), beyond=beyond)
