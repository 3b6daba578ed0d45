"""Batches of files: atomic outputs, a manifest of finished work, resumable after any interruption.

Every matching input ``IN_DIR/a/b.tif`` gives ``OUT_DIR/a/b.tif``. A job writes each output under a
temporary name in the output folder (``.b.tif.semiblind-partial-<id>.tif``) that is renamed to the
final name only when the job returned; then a line is appended (and fsync'ed) to the manifest
``OUT_DIR/semiblind-manifest.jsonl``. Temporaries are written and locked by `fiji_bridge.io.atomic.atomic_path`
(final files get the mode of a plain ``open`` under the umask). So at every instant, and after ``kill -9``:

- a file under a final name is complete;
- a file recorded as done in the manifest has its output;
- a rerun skips files recorded as done whose input is unchanged (size and mtime), whose options
  (the job's ``options``, e.g. iterations) are the same and whose output exists; it redoes everything
  else (unfinished, failed, changed) and removes stale temporaries.

Every output is resolved and must lie inside the output folder and differ from every input; the pattern
may not reach outside the input folder. One batch at a time writes into an output folder (the lock file
``OUT_DIR/.semiblind-batch.lock``): a second one is refused with "busy", before any work.

OME-Zarr images (``IN_DIR/a/b.zarr`` folders) are inputs like files: their output is ``OUT_DIR/a/b.zarr``
(the input's kind), written through a temporary folder (`fiji_bridge.io.atomic.atomic_dir`) under the same
rules, and their version is the size and latest modification time of every file in them.

The work itself is a callable ``job(in_path, out_path) -> dict`` (injected; the CLI uses
`PipelineJob`). Jobs run in this process or as Dask tasks (`fiji_bridge.parallel.dask_engine`), at most as
many files at a time as the cluster has threads; a job that raises marks its file as failed with a one-line
reason and the batch goes on. `PipelineJob` spreads the planes of a stack (and the positions of a plate)
over the whole cluster: on a Dask worker it submits one task per plane (`fiji_bridge.stacks`), so one large
file keeps every worker busy, and writes the results in order as they come back.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from distributed import Client

from fiji_bridge.io.atomic import (PARTIAL_MARK, FolderBusyError, NoSpaceError, atomic_dir, atomic_path, check_terminated,
                     folder_lock, is_disk_full, lock_holder, remove_stale_partials)
from fiji_bridge import validation
from fiji_bridge.parallel.dask_engine import cached_model, engine_client, map_unordered, total_threads

#: Manifest file name inside the output folder.
MANIFEST_NAME = "semiblind-manifest.jsonl"
#: Lock file inside the output folder held by the running batch.
LOCK_NAME = ".semiblind-batch.lock"
#: Suffixes matched when no pattern is given (any case).
TIFF_SUFFIXES = (".tif", ".tiff")
#: Suffix of OME-Zarr folders, inputs like files (any case).
ZARR_SUFFIX = ".zarr"

Job = Callable[[Path, Path], "dict[str, Any] | None"]


class BatchError(ValueError):
    """Bad batch input (folders, pattern); the message is one line."""


@dataclass
class BatchSummary:
    """Outcome of a batch: input paths (relative to the input folder) per status.

    Attributes
    ----------
    done : list of str
        Processed in this run.
    skipped : list of str
        Already finished by an earlier run.
    failed : list of (str, str)
        Input and one-line reason.
    seconds : float
        Wall time of the run in s.
    """

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no file failed."""
        return not self.failed

    def report(self) -> str:
        """Human-readable summary: one line of counts, then one line per failed file."""
        lines = [f"{len(self.done)} done, {len(self.skipped)} skipped (already done), "
                 f"{len(self.failed)} failed in {self.seconds:.1f} s"]
        lines += [f"  failed: {name}: {reason}" for name, reason in self.failed]
        return "\n".join(lines)


def one_line(exc: BaseException) -> str:
    """``Type: message`` of an exception on one line (at most 300 characters), as the manifest records it."""
    return validation.one_line(exc, limit=300)


def check_pattern(pattern: str | None) -> None:
    """Refuse a glob pattern that is empty, absolute or climbs out of the input folder (``..``)."""
    if pattern is None:
        return
    if not pattern.strip():
        raise BatchError("--pattern is empty; give a glob such as '*.tif' or '**/*.tif'")
    parts = Path(pattern).parts
    if Path(pattern).is_absolute() or pattern.startswith(("/", "\\")) or ".." in parts or "~" in parts[:1]:
        raise BatchError(f"--pattern {pattern!r} reaches outside the input folder; give a pattern relative to "
                         "IN_DIR without '..' (e.g. '*.tif' or 'sub/**/*.tif')")


def find_inputs(in_dir: str | os.PathLike, pattern: str | None = None) -> list[Path]:
    """Files under ``in_dir`` matching the glob ``pattern`` (``**/`` recurses), sorted.

    Without ``pattern``: every ``.tif``/``.tiff`` file and ``.zarr`` (OME-Zarr) folder of ``in_dir`` itself,
    any case (``a.TIF`` too). A ``.zarr`` folder is one input: nothing inside it is matched on its own.

    Raises
    ------
    BatchError
        When ``in_dir`` is not a folder, the pattern reaches outside it, or nothing matches.
    """
    in_dir = Path(in_dir)
    if not in_dir.is_dir():
        raise BatchError(f"input folder not found: {in_dir}")
    check_pattern(pattern)
    found = (in_dir.glob(pattern) if pattern is not None
             else (p for p in in_dir.iterdir() if p.suffix.lower() in (*TIFF_SUFFIXES, ZARR_SUFFIX)))
    files = sorted(p for p in found if (p.is_file() or is_zarr_input(p)) and PARTIAL_MARK not in p.name
                   and (pattern is not None or not p.name.startswith("."))      # not macOS' ._a.tif
                   and not _inside_zarr(p, in_dir))
    if not files:
        what = (f"files matching {pattern!r}" if pattern is not None
                else "TIFF files (.tif/.tiff, any case) or OME-Zarr folders (.zarr)")
        raise BatchError(f"no {what} in {in_dir}")
    return files


def is_zarr_input(path: Path) -> bool:
    """Whether ``path`` is an OME-Zarr folder input (a folder named ``*.zarr``, any case)."""
    return path.suffix.lower() == ZARR_SUFFIX and path.is_dir()


def _inside_zarr(path: Path, in_dir: Path) -> bool:
    """Whether ``path`` lies inside a ``.zarr`` folder under ``in_dir`` (a chunk or group of one input)."""
    return any(q.suffix.lower() == ZARR_SUFFIX for q in path.relative_to(in_dir).parents if q.name)


def check_folders(in_dir: str | os.PathLike, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Resolved input and output folders; the output folder must not be (inside) the input folder.

    Raises
    ------
    BatchError
        One-line reason; nothing is created.
    """
    src, dst = Path(in_dir).resolve(), Path(out_dir).resolve()
    if not src.is_dir():
        raise BatchError(f"input folder not found: {in_dir}")
    if dst == src or src in dst.parents:
        raise BatchError(f"output folder {out_dir} is inside the input folder {in_dir}; choose another one")
    if dst.exists() and not dst.is_dir():
        raise BatchError(f"output path {out_dir} exists and is not a folder")
    return src, dst


def output_path(in_path: Path, in_dir: Path, out_dir: Path) -> Path:
    """Output path of ``in_path``: same relative path under ``out_dir``, ``.zarr`` suffix for an OME-Zarr
    input and ``.tif`` for any other (the output has the input's kind)."""
    suffix = ZARR_SUFFIX if in_path.suffix.lower() == ZARR_SUFFIX else ".tif"
    return (out_dir / in_path.relative_to(in_dir)).with_suffix(suffix)


def remove_partials(out_dir: Path) -> list[Path]:
    """Delete temporaries left by interrupted runs anywhere under ``out_dir`` (only semiblind temporary names
    whose writer is dead: `fiji_bridge.io.atomic.remove_stale_partials`)."""
    return remove_stale_partials(out_dir, recursive=True)


def fingerprint(path: Path) -> dict[str, int]:
    """Size (bytes) and modification time (ns) identifying a version of an input file; for a folder (an
    OME-Zarr) the total size of its files and the latest modification time of any of them or of its folders
    (a rewritten chunk changes only its own file)."""
    st = path.stat()
    if not path.is_dir():
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    size, latest = 0, st.st_mtime_ns
    for root, _, names in os.walk(path):
        latest = max(latest, os.stat(root).st_mtime_ns)
        for name in names:
            sub = os.stat(os.path.join(root, name))
            size, latest = size + sub.st_size, max(latest, sub.st_mtime_ns)
    return {"size": size, "mtime_ns": latest}


class Manifest:
    """Append-only JSON-lines record of finished and failed files.

    Each line: ``{"input", "output", "status": "done"|"failed", "size", "mtime_ns", "seconds",
    "reason"?, "info"?, "options", "time"}``. The last line for an input wins; a line torn by a crash is ignored.

    Parameters
    ----------
    path : path
        Manifest file (created on first append).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def load(self) -> dict[str, dict]:
        """``{input (relative): last record}``."""
        records: dict[str, dict] = {}
        if not self.path.exists():
            return records
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:   # torn last line after kill -9
                    continue
                if isinstance(record, dict) and "input" in record:
                    records[record["input"]] = record
        return records

    def append(self, record: dict) -> None:
        """Append one record durably (flush + fsync) before returning."""
        line = json.dumps(record, default=str, ensure_ascii=False)
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                if fh.tell() > 0 and not self._ends_with_newline():
                    fh.write("\n")                 # isolate a torn line from a crash
                fh.write(line + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            if self.path.is_file() and self.path.stat().st_size == 0:
                self.path.unlink()                 # created just now: leave nothing behind
            if is_disk_full(exc):
                raise NoSpaceError(f"no space left on device writing {self.path}") from None
            raise

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"


def job_options(job: Job) -> dict | None:
    """The options identifying what ``job`` computes (its ``options`` attribute), JSON-compatible."""
    options = getattr(job, "options", None)
    return json.loads(json.dumps(options, default=str)) if isinstance(options, dict) else None


def is_finished(record: dict | None, in_path: Path, out_path: Path, options: dict | None = None) -> bool:
    """Whether ``record`` says ``in_path`` (unchanged since) was processed with ``options`` into ``out_path``."""
    if not record or record.get("status") != "done" or not _output_exists(out_path):
        return False
    if record.get("options") != options:
        return False
    fp = fingerprint(in_path)
    return record.get("size") == fp["size"] and record.get("mtime_ns") == fp["mtime_ns"]


def is_folder_output(out_path: Path) -> bool:
    """Whether ``out_path`` is a folder output (an OME-Zarr, ``*.zarr``) rather than a file."""
    return out_path.suffix.lower() == ZARR_SUFFIX


def _output_exists(out_path: Path) -> bool:
    return out_path.is_dir() if is_folder_output(out_path) else out_path.is_file()


def _written(tmp: Path) -> bool:
    """Whether a job wrote something into its temporary output (a non-empty file or folder)."""
    if tmp.is_dir():
        return any(tmp.iterdir())
    return tmp.is_file() and tmp.stat().st_size > 0


def run_one(job: Job, in_path: Path, out_path: Path) -> dict[str, Any]:
    """Run ``job`` into a temporary file (a temporary folder for an OME-Zarr output) and rename it to
    ``out_path``; never raises.

    Returns
    -------
    dict with ``status`` ('done' or 'failed'), ``seconds`` and ``info`` (the job's dict) or ``reason``.
    """
    start = time.perf_counter()
    atomic = atomic_dir if is_folder_output(out_path) else atomic_path
    try:
        with atomic(out_path) as tmp:          # removed on any error, Ctrl-C or SIGTERM
            info = job(in_path, tmp) or {}
            if not _written(tmp):
                raise RuntimeError("the job returned without writing its output")
        if isinstance(info, dict) and isinstance(info.get("outputs"), list):   # the final name, not the temporary
            info = {**info, "outputs": [str(out_path) if str(o) == str(tmp) else o for o in info["outputs"]]}
        return {"status": "done", "seconds": round(time.perf_counter() - start, 3), "info": info}
    except Exception as exc:  # one bad file must not stop the batch
        check_terminated()    # ... but a SIGTERM disguised as another error (during an import) stops it
        return {"status": "failed", "seconds": round(time.perf_counter() - start, 3), "reason": one_line(exc)}


def plan(in_dir: Path, out_dir: Path, pattern: str | None, manifest: Manifest, options: dict | None = None
         ) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """Split the inputs into ``(in, out)`` pairs to process and inputs already finished.

    Raises
    ------
    BatchError
        When two inputs would write the same output (``a.tif`` and ``a.tiff``), an output would resolve
        outside ``out_dir`` (a link in it) or onto an input file.
    """
    records = manifest.load()
    todo, skipped = [], []
    seen: dict[Path, Path] = {}
    inputs = find_inputs(in_dir, pattern)
    root = Path(os.path.realpath(out_dir))
    in_files = {Path(os.path.realpath(p)) for p in inputs}
    in_ids = {(st.st_dev, st.st_ino) for st in map(os.stat, inputs)}
    for src in inputs:
        dst = Path(os.path.realpath(output_path(src, in_dir, out_dir)))
        if root not in dst.parents:
            raise BatchError(f"the output of {src.relative_to(in_dir)} would be {dst}, outside the output folder "
                             f"{out_dir}; nothing was done")
        if dst in in_files or (dst.exists() and (dst.stat().st_dev, dst.stat().st_ino) in in_ids):
            raise BatchError(f"the output of {src.relative_to(in_dir)} would overwrite the input file {dst}; "
                             "nothing was done")
        if dst in seen:
            raise BatchError(f"{seen[dst].name} and {src.name} would both be written to {dst.name}; "
                             "narrow --pattern or rename one")
        seen[dst] = src
        rel = src.relative_to(in_dir).as_posix()
        finished = is_finished(records.get(rel), src, dst, options)
        (skipped.append(src) if finished else todo.append((src, dst)))
    return todo, skipped


def run_batch(job: Job, in_dir: str | os.PathLike, out_dir: str | os.PathLike, pattern: str | None = None, *,
              client: Client | None = None, progress: bool = True) -> BatchSummary:
    """Process every file of ``in_dir`` matching ``pattern`` into ``out_dir``, resumably.

    Parameters
    ----------
    job : callable
        ``job(in_path, out_path) -> dict | None`` writing one output file; runs on Dask workers when
        ``client`` is given, so it must be picklable (a module-level function or a dataclass).
    in_dir, out_dir : path
        Input folder and output folder (created; must not lie inside the input folder).
    pattern : str, optional
        Glob pattern relative to ``in_dir`` (``'**/*.tif'`` recurses); it may not contain ``..``. Default:
        every ``.tif``/``.tiff`` file of ``in_dir``, any case.
    client : distributed.Client, optional
        Run files as Dask tasks on this cluster; default: one after another in this process.
    progress : bool
        Show a tqdm progress bar over files (on stderr).

    Returns
    -------
    BatchSummary

    Raises
    ------
    BatchError
        Missing input folder, no matching file, output folder inside the input folder, a pattern or output
        reaching outside its folder, another batch running into ``out_dir`` ("busy").
    """
    start = time.perf_counter()
    src, dst = check_folders(in_dir, out_dir)
    options = job_options(job)
    manifest = Manifest(dst / MANIFEST_NAME)
    plan(src, dst, pattern, manifest, options)                    # fails before anything is created
    check_not_busy(dst)
    dst.mkdir(parents=True, exist_ok=True)
    try:
        with folder_lock(dst / LOCK_NAME):
            return _run_locked(job, src, dst, pattern, manifest, options, client, progress, start)
    except FolderBusyError as exc:          # only the lock raises it: nothing was done
        raise BatchError(_busy_message(dst, str(exc))) from None


def _run_locked(job: Job, src: Path, dst: Path, pattern: str | None, manifest: Manifest, options: dict | None,
                client, progress: bool, start: float) -> BatchSummary:
    todo, skipped = plan(src, dst, pattern, manifest, options)   # again: a run that just ended may have done some
    remove_partials(dst)
    for _, out in todo:
        out.parent.mkdir(parents=True, exist_ok=True)
    summary = BatchSummary(skipped=[p.relative_to(src).as_posix() for p in skipped])
    versions = [fingerprint(a) for a, _ in todo]       # the input versions being processed
    with tqdm(total=len(todo) + len(skipped), initial=len(skipped), unit="file", disable=not progress,
              desc="semiblind batch") as bar:
        # at most one file per thread at a time: a stack's job hands its thread to its plane tasks, and
        # more files in flight would only hold more planes in memory
        in_flight = total_threads(client) if client is not None else None
        for i, result in map_unordered(run_one, [(job, a, b) for a, b in todo], client=client,
                                       max_in_flight=in_flight):
            if isinstance(result, BaseException):
                result = {"status": "failed", "seconds": None, "reason": one_line(result)}
            _record(manifest, summary, src, dst, *todo[i], {**versions[i], **result, "options": options})
            bar.update()
    summary.seconds = time.perf_counter() - start
    return summary


def deconvolve_folder(in_dir: str | os.PathLike, out_dir: str | os.PathLike, pattern: str | None = None, *,
                      scheduler: str | None = None, workers: int | None = None, job: Job | None = None,
                      progress: bool = True, **options: Any) -> BatchSummary:
    """Deconvolve every matching file of a folder: the Python equivalent of ``semiblind batch``.

    Parameters
    ----------
    in_dir, out_dir, pattern
        As in `run_batch`.
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:8786``); default: an embedded local
        cluster of ``workers`` processes (`fiji_bridge.parallel.dask_engine.engine_client`).
    workers : int, optional
        Worker processes of the embedded cluster (default: CPU cores; 1 runs in this process).
    job : callable, optional
        Replaces the pipeline (`PipelineJob` of ``options``).
    progress : bool
        tqdm progress bar over files.
    **options
        Options of `fiji_bridge.pipeline.process_file` (iterations, tv, tile, model, device, ...).

    Returns
    -------
    BatchSummary

    Raises
    ------
    BatchError, fiji_bridge.parallel.dask_engine.EngineError
        Bad folders or pattern, output folder busy, unreachable scheduler: checked before anything is written.
    """
    src, dst = check_folders(in_dir, out_dir)
    find_inputs(src, pattern)
    check_not_busy(dst)                     # before starting a cluster
    job = job or PipelineJob(options)
    try:
        with engine_client(scheduler, workers) as client:
            return run_batch(job, src, dst, pattern, client=client, progress=progress)
    except BaseException:
        # interrupted (Ctrl-C, SIGTERM) or failed: the cluster is closed now, so the temporaries of its
        # workers are no longer locked; remove them (a live concurrent writer's are kept)
        if dst.is_dir() and lock_holder(dst / LOCK_NAME) is None:
            remove_partials(dst)
        raise


def check_not_busy(out_dir: Path) -> None:
    """Raise `BatchError` when another batch holds the lock of ``out_dir`` (creates nothing)."""
    holder = lock_holder(Path(out_dir) / LOCK_NAME)
    if holder is not None:
        raise BatchError(_busy_message(out_dir, holder))


def _busy_message(out_dir: Path, holder: str) -> str:
    return (f"output folder {out_dir} is busy: another semiblind batch ({holder}) is writing into it; "
            "wait for it to finish or choose another folder")


def _record(manifest: Manifest, summary: BatchSummary, src: Path, dst: Path, in_path: Path, out_path: Path,
            result: dict) -> None:
    rel = in_path.relative_to(src).as_posix()
    record = {"input": rel, "output": out_path.relative_to(dst).as_posix(), **result,
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    manifest.append(record)
    if result["status"] == "done":
        summary.done.append(rel)
    else:
        summary.failed.append((rel, result.get("reason", "unknown error")))


@dataclass(frozen=True)
class PipelineJob:
    """The CLI's job: `fiji_bridge.pipeline.process_file` with fixed options, model cached per worker.

    Parameters
    ----------
    options : dict
        Keyword options of ``process_file`` (iterations, tv, tile, device, ...). A ``model`` given
        as a path is loaded once per process (Dask worker) with `fiji_bridge.parallel.dask_engine.cached_model`.
    """

    options: dict = field(default_factory=dict)

    def __call__(self, in_path: Path, out_path: Path) -> dict[str, Any]:
        from fiji_bridge.estimation.model import default_model_path
        from fiji_bridge.pipeline import process_file

        options = dict(self.options)
        model = options.get("model")
        if isinstance(model, (str, os.PathLike)) or (model is None and default_model_path().is_file()):
            options["model"] = cached_model(model, device=options.get("device", "cpu"))
        if not is_folder_output(Path(out_path)):
            options.pop("pyramid", None)           # TIFF outputs have one level; pyramids are for OME-Zarr
        with plane_client(Path(in_path)) as client:
            result = process_file(in_path, out_path, client=client, **options)
        return result if isinstance(result, dict) else {}


@contextlib.contextmanager
def plane_client(in_path: Path) -> Iterator[Any]:
    """A client for the plane tasks of ``in_path`` when this job runs on a Dask worker and the file has
    several planes (or positions), else None.

    The client is ``distributed.worker_client``: the job's task leaves the worker's thread pool while it
    waits for its planes, so they can run on that worker too; a 2-D file keeps its thread and runs here.
    """
    try:
        from distributed import get_worker, worker_client
        get_worker()
    except (ImportError, ValueError):              # not on a Dask worker (or no Dask): planes run here
        yield None
        return
    if count_planes(in_path) < 2:
        yield None
        return
    with worker_client() as client:
        yield client


def count_planes(path: Path) -> int:
    """YX planes of an input over all its positions (1 when it cannot be read: the job then says why)."""
    from fiji_bridge.io.omezarr import image_paths
    from fiji_bridge.io.stacks import open_stack
    from fiji_bridge.positions import is_multi_position
    try:
        images = [path / rel for rel in image_paths(path)] if is_multi_position(path) else [path]
        return sum(open_stack(p).n_planes for p in images)
    except ValueError:
        return 1
