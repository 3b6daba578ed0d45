"""Array-module dispatch: one code path for NumPy (CPU) and CuPy (GPU) arrays."""
from __future__ import annotations

import contextlib
import os
from types import ModuleType

import numpy as np
import scipy.fft


def cupy_module() -> ModuleType | None:
    """The CuPy module if it imports and sees a CUDA device, else None."""
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        return cupy
    except Exception:  # ImportError, CUDA driver errors: no usable GPU
        return None


def array_module(x) -> ModuleType:
    """``cupy`` for CuPy arrays, ``numpy`` otherwise."""
    if type(x).__module__.startswith("cupy"):
        import cupy
        return cupy
    return np


def fft_module(xp: ModuleType) -> ModuleType:
    """``scipy.fft`` for NumPy, ``cupyx.scipy.fft`` for CuPy (cuFFT with plan caching)."""
    if xp is np:
        return scipy.fft
    import cupyx.scipy.fft
    return cupyx.scipy.fft


def thread_limit() -> int | None:
    """Threads per process from ``SEMIBLIND_THREADS`` (set for each Dask worker), or None for all cores."""
    return int(os.environ.get("SEMIBLIND_THREADS", 0)) or None


def fft_workers(xp: ModuleType):
    """Context manager running SciPy FFTs on all cores, or on ``SEMIBLIND_THREADS`` threads (set per
    Dask worker process so that workers do not oversubscribe the cores); no-op for CuPy."""
    if xp is np:
        return scipy.fft.set_workers(thread_limit() or os.cpu_count() or 1)
    return contextlib.nullcontext()


def resolve_device(device: str) -> ModuleType:
    """Array module for ``device`` in {'cpu', 'gpu', 'auto'}.

    'gpu' raises RuntimeError when CuPy or a CUDA device is missing; 'auto' falls back to the CPU.
    """
    from fiji_bridge.settings import check_device
    if check_device(device) == "cpu":
        return np
    cp = cupy_module()
    if cp is None and device == "gpu":
        raise RuntimeError("device 'gpu' requested but CuPy with a CUDA GPU is not available "
                           "(install semiblind[gpu] on a machine with an NVIDIA GPU, or use --device auto)")
    return cp if cp is not None else np


def to_numpy(x) -> np.ndarray:
    """Host copy of a NumPy or CuPy array."""
    return x.get() if hasattr(x, "get") and not isinstance(x, np.ndarray) else np.asarray(x)
