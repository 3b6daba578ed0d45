"""Dask as the execution engine: an embedded local cluster by default, any Dask cluster on request.

- `open_client` gives a ``distributed.Client``: a `distributed.LocalCluster` of worker *processes*
  sized to the machine (one thread each: the FFTs inside a task already use the cores), or a
  connection to an existing scheduler (``tcp://host:port``) — a cluster started with
  ``dask scheduler`` / ``dask worker``, dask-jobqueue (SLURM, PBS, ...), Kubernetes, etc.
- `map_unordered` runs a function over argument tuples as Dask tasks and yields ``(index, result)``
  as they finish (files of a batch).
- `map_ordered` runs a function over argument tuples as Dask tasks with a bounded number in
  flight and yields the results *in submission order* (deterministic blending / manifests), or runs
  them in this process when no client is given.
- `cached_model` loads the PSF model (ONNX, `fiji_bridge.estimation.model.PSFModel`) once per worker process
  and reuses it for every task on that worker; `ModelPreload` is a ``distributed.WorkerPlugin`` that
  loads it when a worker starts.

``distributed`` is an optional dependency (``pip install semiblind[dask]``), imported only here and
only when a cluster is used.
"""
from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distributed import Client

#: Seconds to wait for an existing scheduler before giving up.
CONNECT_TIMEOUT = 10.0

#: Models loaded in this process (a Dask worker, or the client for single-process runs), by key.
_MODELS: dict[tuple[str, str, str], Any] = {}
#: How many times each model was loaded in this process (diagnostics and tests).
LOAD_COUNTS: dict[str, int] = {}


class EngineError(RuntimeError):
    """The Dask engine cannot be used (missing package, unreachable scheduler); one-line message."""


def _distributed():
    try:
        import distributed
    except ImportError:
        raise EngineError("Dask is not installed; install it with `pip install semiblind[dask]`") from None
    return distributed


def default_workers() -> int:
    """Worker processes for the embedded cluster: the CPU cores available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def local_cluster(workers: int | None = None, threads_per_worker: int = 1):
    """An embedded ``distributed.LocalCluster`` of worker processes on 127.0.0.1 without dashboard.

    Parameters
    ----------
    workers : int, optional
        Number of worker processes; default `default_workers`.
    threads_per_worker : int
        Threads per worker process.
    """
    distributed = _distributed()
    n = default_workers() if workers is None else int(workers)
    if n < 1:
        raise EngineError(f"--workers must be at least 1, got {n}")
    # each worker process runs its FFTs, ONNX Runtime and BLAS on its own threads only
    threads = str(threads_per_worker)
    env = {"SEMIBLIND_THREADS": threads, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    import dask

    # Dask's default MALLOC_TRIM_THRESHOLD_ for workers fixes glibc's mmap threshold, so every large
    # temporary of an RL iteration is a fresh mmap with page faults: measured 28 % slower tasks. Unset it.
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return distributed.LocalCluster(n_workers=n, threads_per_worker=threads_per_worker, processes=True,
                                        host="127.0.0.1", dashboard_address=None, silence_logs=40, env=env,
                                        # no dashboard; its health/metrics HTTP server on a free local port
                                        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})


def connect(address: str, timeout: float | None = None):
    """A ``distributed.Client`` connected to the scheduler at ``address`` (e.g. ``tcp://10.0.0.5:8786``).

    ``timeout`` is in seconds (default `CONNECT_TIMEOUT`).

    Raises
    ------
    EngineError
        One line naming the address when the scheduler cannot be reached in ``timeout`` seconds.
    """
    distributed = _distributed()
    _probe(address, timeout or CONNECT_TIMEOUT)
    try:
        return distributed.Client(address, timeout=timeout or CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise EngineError(f"cannot reach the Dask scheduler at {address}: {reason[:200]}") from None


def _probe(address: str, timeout: float) -> None:
    """Check a scheduler address before a ``Client`` is made (a Client that fails to connect hangs for 20 s
    at exit and prints a traceback): its syntax, and for TCP-like schemes that something listens there.

    Raises
    ------
    EngineError
        One line: not an address, or nothing reachable at it.
    """
    from distributed.comm import parse_address, parse_host_port
    try:
        scheme, location = parse_address(address)
        if scheme not in ("tcp", "tls", "ws", "wss"):
            return
        host, port = parse_host_port(location)
    except (ValueError, TypeError):
        raise EngineError(f"not a Dask scheduler address: {address!r} (expected tcp://HOST:PORT, "
                          "e.g. tcp://10.0.0.5:8786)") from None
    import socket
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = " ".join((exc.strerror or str(exc) or type(exc).__name__).split())
        raise EngineError(f"cannot reach the Dask scheduler at {address}: {reason[:200]}") from None


@contextlib.contextmanager
def open_client(scheduler: str | None = None, workers: int | None = None,
                timeout: float | None = None) -> Iterator[Any]:
    """Context manager yielding a ``distributed.Client``, closed (with its embedded cluster) on exit.

    Parameters
    ----------
    scheduler : str, optional
        Address of an existing scheduler; default: start an embedded `local_cluster`.
    workers : int, optional
        Worker processes of the embedded cluster (ignored with ``scheduler``).
    timeout : float, optional
        Seconds to wait for an existing scheduler (default `CONNECT_TIMEOUT`).

    Raises
    ------
    EngineError
        Dask missing, or the scheduler unreachable (one line).
    """
    if scheduler:
        client = connect(scheduler, timeout)
        try:
            yield client
        finally:
            client.close()
        return
    distributed = _distributed()
    with local_cluster(workers) as cluster, distributed.Client(cluster, set_as_default=False) as client:
        yield client


@contextlib.contextmanager
def engine_client(scheduler: str | None = None, workers: int | None = None,
                  timeout: float | None = None) -> Iterator[Any]:
    """The client to run work with, or None to run it in this process.

    ``scheduler`` given: a client of that cluster. ``workers == 1`` without ``scheduler``: None (no
    Dask). Otherwise an embedded local cluster of ``workers`` processes (default: the CPU cores), or
    None when Dask is not installed and neither was asked for explicitly.

    Raises
    ------
    EngineError
        Dask missing although asked for, or the scheduler unreachable (one line).
    """
    if scheduler is None and workers == 1:
        yield None
        return
    try:
        import distributed  # noqa: F401
    except ImportError:
        if scheduler is not None or workers is not None:
            raise EngineError("Dask is not installed; install it with `pip install semiblind[dask]` "
                              "or run with --workers 1") from None
        yield None
        return
    with open_client(scheduler, workers, timeout) as client:
        yield client


def total_threads(client) -> int:
    """Worker threads of the cluster behind ``client`` (at least 1)."""
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:  # a client that cannot tell: assume one
        return 1


def map_ordered(fn: Callable[..., Any], items: Iterable[tuple], client: Client | None = None,
                max_in_flight: int | None = None) -> Iterator[Any]:
    """``fn(*args)`` for each argument tuple, in order; as Dask tasks when ``client`` is given.

    At most ``max_in_flight`` tasks (default: twice the cluster's threads) are submitted ahead of the
    result being consumed, so memory stays bounded for long or lazily produced ``items``.
    Exceptions raised by a task are re-raised when its result is reached.
    """
    if client is None:
        for args in items:
            yield fn(*args)
        return
    limit = max_in_flight or 2 * total_threads(client)
    pending: deque = deque()
    for args in items:
        pending.append(client.submit(fn, *args, pure=False))
        if len(pending) >= limit:
            yield _take(pending.popleft())
    while pending:
        yield _take(pending.popleft())


def map_unordered(fn: Callable[..., Any], items: list[tuple], client: Client | None = None,
                  max_in_flight: int | None = None) -> Iterator[tuple[int, Any]]:
    """``(index, fn(*items[index]))`` as each finishes; Dask tasks when ``client`` is given.

    At most ``max_in_flight`` tasks (default: all) are submitted at a time; the next is submitted as one
    finishes. A task whose worker died yields the exception instead of a result.
    """
    if client is None:
        for i, args in enumerate(items):
            yield i, fn(*args)
        return
    queue = iter(enumerate(items))
    futures: dict[Any, int] = {}
    done = _distributed().as_completed(loop=client.loop)

    def submit_next() -> None:
        nxt = next(queue, None)
        if nxt is not None:
            future = client.submit(fn, *nxt[1], pure=False)
            futures[future] = nxt[0]
            done.add(future)
    for _ in range(len(items) if max_in_flight is None else max(1, int(max_in_flight))):
        submit_next()
    for future in done:
        try:
            result = future.result()
        except Exception as exc:  # KilledWorker, lost connection: report, keep going
            result = exc
        future.release()
        submit_next()
        yield futures.pop(future), result


def _take(future) -> Any:
    try:
        return future.result()
    finally:
        future.release()


def cached_model(path: str | os.PathLike | None = None, loader: Callable[..., Any] | None = None,
                 device: str = "cpu") -> Any:
    """The model at ``path`` loaded once in this process (a Dask worker keeps it between tasks).

    Parameters
    ----------
    path : path, optional
        Model file (ONNX); default: the bundled model (`fiji_bridge.estimation.model.default_model_path`).
    loader : callable, optional
        ``loader(path, device) -> model``; default `fiji_bridge.estimation.model.PSFModel`.
    device : {'cpu', 'gpu', 'auto'}
        Passed to the loader; part of the cache key with the path and the loader's name.
    """
    if loader is None:
        from fiji_bridge.estimation.model import PSFModel as loader
    if path is None:
        from fiji_bridge.estimation.model import default_model_path
        path = default_model_path()
    resolved = str(Path(path).resolve())
    key = (resolved, device, f"{loader.__module__}.{loader.__qualname__}")
    if key not in _MODELS:
        _MODELS[key] = loader(resolved, device)
        LOAD_COUNTS[resolved] = LOAD_COUNTS.get(resolved, 0) + 1
    return _MODELS[key]


def model_load_counts() -> dict[str, int]:
    """``{model path: times loaded}`` in this process (run it on workers with ``client.run``)."""
    return dict(LOAD_COUNTS)


def _plugin_base():
    try:
        from distributed.diagnostics.plugin import WorkerPlugin
    except ImportError:  # distributed missing: the plugin cannot be used anyway
        return object
    return WorkerPlugin


class ModelPreload(_plugin_base()):
    """Worker plugin loading a model into `cached_model`'s cache when each worker starts.

    ``client.register_plugin(ModelPreload(path))``; tasks then call ``cached_model(path)`` and
    get the already-loaded model.
    """

    name = "semiblind-model-preload"

    def __init__(self, path: str | os.PathLike | None = None, loader: Callable[..., Any] | None = None,
                 device: str = "cpu"):
        self.path, self.loader, self.device = (None if path is None else str(path)), loader, device

    def setup(self, worker) -> None:  # noqa: D102 - WorkerPlugin hook
        cached_model(self.path, self.loader, self.device)
