"""ONNX export with a dynamic batch axis, verified against PyTorch with ONNX Runtime."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from fiji_bridge.estimation.model_config import ModelConfig

from .network import PSFRegressor


def export_onnx(model: PSFRegressor, config: ModelConfig, path: str | Path, tolerance: float = 1e-4,
                seed: int = 0) -> float:
    """Write ``path`` (.onnx) and its config (.json); returns the max |ORT - torch| on random patches.

    Raises RuntimeError when ONNX Runtime disagrees with PyTorch by more than ``tolerance``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    p = config.patch_size
    names = list(config.outputs)          # the config's output names, in the network's output order
    dummy = torch.zeros(2, config.input_channels, p, p)
    tmp = path.with_suffix(".onnx.tmp")
    torch.onnx.export(model, (dummy,), str(tmp), input_names=[config.input_name], output_names=names,
                      dynamic_axes={config.input_name: {0: "batch"}, **{n: {0: "batch"} for n in names}},
                      opset_version=17, dynamo=False)
    diff = verify_onnx(model, tmp, config, seed=seed)
    if diff > tolerance:
        tmp.unlink()
        raise RuntimeError(f"ONNX Runtime output differs from PyTorch by {diff:.2e} > {tolerance:.0e}")
    tmp.replace(path)
    config.save(path.with_suffix(".json"))
    return diff


def verify_onnx(model: PSFRegressor, onnx_path: str | Path, config: ModelConfig, n: int = 37, seed: int = 0) -> float:
    """Max absolute difference between ORT and PyTorch outputs on random normalised patches."""
    shape = (n, config.input_channels, config.patch_size, config.patch_size)
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ours = sess.run(list(config.outputs), {config.input_name: x})
    with torch.no_grad():
        ref = [t.numpy() for t in model(torch.from_numpy(x))]
    return float(max(np.abs(a - b).max() for a, b in zip(ours, ref)))
