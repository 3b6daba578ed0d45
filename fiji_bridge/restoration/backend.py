"""Array-module dispatch: one code path for NumPy (CPU) and CuPy (GPU) arrays."""
from __future__ import annotations

import contextlib
import os
import sys
import time
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


def release_heap() -> None:
    """Give the C heap's free pages back to the operating system (glibc's ``malloc_trim``; a no-op where
    there is none). After a 2048² PSF map, ONNX Runtime's freed allocations stay in glibc's arenas (about
    60 MB of resident memory, measured) and would add to the peak of the deconvolution that follows;
    Dask's workers trim their heaps the same way."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):    # musl and other C libraries: nothing to trim with
        pass


def fftw_module() -> ModuleType | None:
    """``pyfftw`` (FFTW) when it is installed (``pip install semiblind[fftw]``) and not turned off by
    ``SEMIBLIND_FFT=scipy``; None otherwise (the CPU FFTs are then SciPy's pocketfft). Unless
    ``SEMIBLIND_FFT=fftw`` forces it, `RealFFT2` still runs pocketfft on shapes where FFTW's plan is slower."""
    if os.environ.get("SEMIBLIND_FFT", "").strip().lower() in ("scipy", "pocketfft"):
        return None
    # pyfftw.interfaces imports dask.array whenever it can (about 30 MB of resident memory, issue 15's
    # memory target); only pyfftw's core is used here, so dask is hidden during that first import
    hide = "dask" not in sys.modules
    if hide:
        sys.modules["dask"] = None  # type: ignore[assignment]
    try:
        import pyfftw
    except ImportError:
        return None
    finally:
        if hide:
            sys.modules.pop("dask", None)
    return pyfftw


def _fftw_and_allocator(xp: ModuleType):
    """pyfftw (or None: CuPy, or no FFTW) and the allocator of the FFT buffers (SIMD-aligned for FFTW)."""
    fftw = fftw_module() if xp is np else None
    return fftw, (fftw.empty_aligned if fftw is not None else (lambda s, dtype: xp.empty(s, dtype)))


def _measured_plans(fftw, build):
    """``build()``'s FFTW plans, with the measured wisdom loaded first and saved after when new plans were
    measured (a new shape costs about 0.5-2 s once per machine)."""
    _load_wisdom(fftw)
    t = time.perf_counter()
    plans = build()
    if time.perf_counter() - t > 0.05:
        _save_wisdom(fftw)
    return plans


class RealFFT2:
    """Batched 2-D real FFTs between fixed buffers: ``real`` (B, Ly, Lx) float32 -> ``spec`` (B, Ly, Lx//2+1)
    complex64 -> ``out`` (like ``real``), neither direction normalised (callers fold ``1/(Ly·Lx)`` into
    their spectra).

    With FFTW (`fftw_module`) the transforms are plans on the buffers, executed without allocation, on 1
    thread (more threads were measured to slow a loaded machine down); planning is FFTW_MEASURE bounded by
    `FFTW_PLANNING_S` per plan, and FFTW keeps what it learns for the process. The plans are kept only where
    they beat pocketfft (`_fftw_is_faster`; ``SEMIBLIND_FFT=fftw`` keeps them always). Without them (or for CuPy),
    ``scipy.fft`` / ``cupyx.scipy.fft`` return new arrays. ``r2c`` reads ``real``; ``c2r`` may destroy
    its input spectrum and returns the array holding the result.
    """

    def __init__(self, xp: ModuleType, batch: int, shape: tuple[int, int]):
        self.xp, self.shape = xp, tuple(shape)
        ly, lx = shape
        fftw, empty = _fftw_and_allocator(xp)
        self.real = empty((batch, ly, lx), dtype="float32")
        self.spec = empty((batch, ly, lx // 2 + 1), dtype="complex64")
        self.out = empty((batch, ly, lx), dtype="float32") if fftw is not None else None
        self._plans = None
        if fftw is not None:
            self._plans = _measured_plans(fftw, lambda: (
                fftw.FFTW(self.real, self.spec, axes=(-2, -1), flags=("FFTW_MEASURE",), threads=1,
                          planning_timelimit=FFTW_PLANNING_S),
                fftw.FFTW(self.spec, self.out, axes=(-2, -1), direction="FFTW_BACKWARD",
                          flags=("FFTW_MEASURE", "FFTW_DESTROY_INPUT"), threads=1, planning_timelimit=FFTW_PLANNING_S)))
            if not _fftw_forced() and not self._fftw_is_faster():
                self._plans, self.out = None, None            # pocketfft on these buffers, as without pyfftw
        if self._plans is None:
            self.fft = fft_module(xp)
        self.real[...] = 0                                    # planning may have written into the buffers

    def _fftw_is_faster(self) -> bool:
        """Whether FFTW's plans beat pocketfft on these buffers (`fftw_wins`)."""
        fft = fft_module(self.xp)

        def pocketfft() -> None:
            with fft_workers(self.xp):
                fft.irfft2(fft.rfft2(self.real, axes=(-2, -1)), s=self.shape, axes=(-2, -1))

        def fftw() -> None:
            self._plans[0].execute()
            self._plans[1].execute()

        return fftw_wins((self.real.shape, self.xp.__name__), pocketfft, fftw)

    @property
    def backend(self) -> str:
        return "fftw" if self._plans is not None else ("pocketfft" if self.xp is np else "cufft")

    def r2c(self):
        """Spectrum of ``self.real``: ``self.spec`` (FFTW) or a new array."""
        if self._plans is not None:
            self._plans[0].execute()
            return self.spec
        with fft_workers(self.xp):
            return self.fft.rfft2(self.real, axes=(-2, -1))

    def c2r(self, spec):
        """Unnormalised inverse of ``spec`` (``self.spec`` with FFTW, then destroyed): ``self.out`` or a new array."""
        if self._plans is not None:
            self._plans[1].execute()
            return self.out
        with fft_workers(self.xp):
            return self.fft.irfft2(spec, s=self.shape, axes=(-2, -1), norm="forward")


class SeparableFFT:
    """A 2-D FFT's two 1-D passes done apart, on fixed buffers, for the separable cell scheme of
    `fiji_bridge.restoration.sv_convolution.SVConvolution`: row transforms between ``rows`` (B, R, Lx) float32
    and the first R rows of ``terms[:B]`` ((K, Ly, Lx//2+1) complex64), and column transforms of each of the K
    ``terms`` in place. Only the R rows that hold data are row-transformed; the rest of each column is zero
    padding. Neither direction is normalised.

    FFTW plans (one thread, as `RealFFT2`) where pyfftw is installed and they win the race against pocketfft
    (`fftw_wins`); otherwise ``scipy.fft`` / ``cupyx.scipy.fft`` with their results copied into the buffers.
    """

    def __init__(self, xp: ModuleType, shape: tuple[int, int], rows: int, batch: int, terms: int):
        self.xp, self.shape, self.nrows, self.batch = xp, tuple(shape), rows, batch
        ly, lx = shape
        fftw, empty = _fftw_and_allocator(xp)
        self.rows = empty((batch, rows, lx), dtype="float32")
        self.terms = empty((terms, ly, lx // 2 + 1), dtype="complex64")
        self.rows_out = empty((batch, rows, lx), dtype="float32") if fftw is not None else None
        self._plans = None
        self.fft = fft_module(xp)
        if fftw is not None:
            flags, limit = ("FFTW_MEASURE",), FFTW_PLANNING_S
            head = self.terms[:batch, :rows]
            self._plans = _measured_plans(fftw, lambda: (
                fftw.FFTW(self.rows, head, axes=(-1,), flags=flags, threads=1, planning_timelimit=limit),
                fftw.FFTW(head, self.rows_out, axes=(-1,), direction="FFTW_BACKWARD",
                          flags=(*flags, "FFTW_DESTROY_INPUT"), threads=1, planning_timelimit=limit),
                # one in-place plan per term: measured 5-30 % faster per array than one batched plan
                [fftw.FFTW(z, z, axes=(0,), flags=flags, threads=1, planning_timelimit=limit) for z in self.terms],
                [fftw.FFTW(z, z, axes=(0,), direction="FFTW_BACKWARD", flags=flags, threads=1,
                           planning_timelimit=limit) for z in self.terms]))
            if not _fftw_forced() and not self._fftw_is_faster():
                self._plans, self.rows_out = None, None
        self.rows[...] = 0                                    # planning may have written into the buffers

    def _fftw_is_faster(self) -> bool:
        plans = self._plans

        def passes() -> None:              # with the plans while ``self._plans`` is set, scipy.fft without
            self.rows_forward(), self.columns(), self.columns(inverse=True), self.rows_inverse()

        def pocketfft() -> None:
            self._plans = None
            try:
                passes()
            finally:
                self._plans = plans

        return fftw_wins(("separable", self.rows.shape, self.terms.shape, self.xp.__name__), pocketfft, passes)

    @property
    def backend(self) -> str:
        return "fftw" if self._plans is not None else ("pocketfft" if self.xp is np else "cufft")

    def rows_forward(self) -> None:
        """``terms[:B, :R]`` = the row spectra (length Lx//2+1) of ``rows`` (zero-padded to Lx)."""
        if self._plans is not None:
            self._plans[0].execute()
            return
        with fft_workers(self.xp):
            self.terms[:self.batch, :self.nrows] = self.fft.rfft(self.rows, n=self.shape[1], axis=-1)

    def columns(self, inverse: bool = False) -> None:
        """Each of ``terms`` replaced by its transform along the columns (unnormalised either way)."""
        if self._plans is not None:
            for p in self._plans[3 if inverse else 2]:
                p.execute()
            return
        with fft_workers(self.xp):
            if inverse:
                self.terms[...] = self.fft.ifft(self.terms, axis=-2, norm="forward", overwrite_x=True)
            else:
                self.terms[...] = self.fft.fft(self.terms, axis=-2, overwrite_x=True)

    def rows_inverse(self):
        """Unnormalised inverse row transforms of ``terms[:B, :R]`` (destroyed): (B, R, Lx) float32."""
        if self._plans is not None:
            self._plans[1].execute()
            return self.rows_out
        with fft_workers(self.xp):
            return self.fft.irfft(self.terms[:self.batch, :self.nrows], n=self.shape[1], axis=-1, norm="forward")


#: Per (buffer shape, array module): whether FFTW won the race against pocketfft in this process.
_RACE: dict[tuple, bool] = {}


def fftw_wins(key: tuple, pocketfft, fftw) -> bool:
    """Whether ``fftw()`` (plans) runs at least as fast as ``pocketfft()`` (the same transforms with scipy.fft):
    best of 2 after a first call each, once per process and ``key``. FFTW_MEASURE under a time limit on a loaded
    machine sometimes keeps a poor plan (measured: 29-52 ms per pair at 2160² against pocketfft's 38-41 ms; 17
    against 9 ms at 1088²), and the wisdom file would keep it for later runs; racing the two keeps the engine at
    least as fast as pocketfft."""
    if key not in _RACE:
        timings = {}
        for name, run in (("pocketfft", pocketfft), ("fftw", fftw)):
            run()                                             # first call: pocketfft's plan cache, warm pages
            best = np.inf
            for _ in range(2):
                t = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - t)
            timings[name] = best
        _RACE[key] = timings["fftw"] <= timings["pocketfft"]
    return _RACE[key]


def _fftw_forced() -> bool:
    """``SEMIBLIND_FFT=fftw``: FFTW's plans whatever the race says (tests, benchmarks of the FFTW path)."""
    return os.environ.get("SEMIBLIND_FFT", "").strip().lower() == "fftw"


#: Most seconds FFTW may spend measuring one plan (then it keeps the best found so far): 1 s gives plans
#: 0.62-0.66x pocketfft's time on the engine's shapes, 0.25 s only 0.87-1.0x (measured, 1 thread).
FFTW_PLANNING_S = 1.0
_wisdom_loaded = False


def wisdom_path():
    """File keeping FFTW's measured plans between runs (``SEMIBLIND_FFTW_WISDOM``: a path, or 'off'), by
    default in the user's cache folder: only a new shape pays the planning time (about 0.5-2 s)."""
    from pathlib import Path
    value = os.environ.get("SEMIBLIND_FFTW_WISDOM", "")
    if value.strip().lower() == "off":
        return None
    if value:
        return Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "semiblind" / "fftw_wisdom_float32.txt"


def _load_wisdom(fftw) -> None:
    global _wisdom_loaded
    if _wisdom_loaded:
        return
    _wisdom_loaded = True
    path = wisdom_path()
    try:
        if path is not None and path.is_file():
            fftw.import_wisdom((b"", path.read_bytes(), b""))      # a stale or foreign file is ignored by FFTW
    except (OSError, ValueError, TypeError):
        pass


def _save_wisdom(fftw) -> None:
    path = wisdom_path()
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(fftw.export_wisdom()[1])
        os.replace(tmp, path)                                         # atomic: concurrent runs never read half a file
    except OSError:                                                   # read-only home: plans are measured again next run
        pass


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
