"""Output files written atomically, with ordinary permissions, and never left half-written.

Every file semiblind writes (TIFF, PNG, JSON, jars; CLI, batch, ImageJ, demo) goes through `atomic_path`:

- the data go to a hidden temporary next to the destination, ``.NAME.semiblind-partial-<id>.SUFFIX``,
  which is renamed onto the destination only when complete: a file under its final name is always whole;
- the final file has the mode a plain ``open(path, "w")`` gives: ``0o666 & ~umask`` for a new file (the
  temporary is created with mode 0o666, so the kernel applies the umask and any default ACL), the
  existing mode when it replaces a file;
- on any error or interruption (exception, Ctrl-C, and SIGTERM/SIGHUP inside `terminate_gracefully`)
  the temporary is removed; "no space left on device" becomes a one-line `NoSpaceError`;
- while it is written, the temporary is locked (``flock``) by the writing process. A temporary whose
  lock is free belongs to a dead process (``kill -9``, power loss): the first write of a process into a
  folder removes such stale temporaries (`remove_stale_partials`), never a live one of a concurrent run.

Folder outputs (OME-Zarr images, plates) go through `atomic_dir` with the same rules: a hidden temporary
folder ``.NAME.semiblind-partial-<id>.zarr`` next to the destination, locked (``flock`` on the folder) while
it is written, renamed onto the destination when complete, removed on failure, and swept when stale.

`folder_lock` is an exclusive, non-blocking lock file (one ``semiblind batch`` per output folder).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import socket
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:       # not POSIX: no locks; stale temporaries are recognised by age instead
    fcntl = None

#: Marker in the names of temporary outputs (only files carrying it are ever deleted).
PARTIAL_MARK = ".semiblind-partial-"
#: Temporaries of versions before `atomic_path` (``.OUT.tif.x8y2k_3q.part``), removed like ours.
_LEGACY_PARTIAL = re.compile(r"^\..+\.tiff?\.[a-z0-9_]{8}\.part$", re.IGNORECASE)
#: Without ``fcntl``, a temporary older than this (s) counts as stale.
_STALE_AGE = 24 * 3600.0

_LIVE: dict[Path, int] = {}          # temporaries being written by this process -> fd holding the lock
_LIVE_GUARD = threading.Lock()
_SWEPT: set[Path] = set()            # folders already cleared of stale temporaries by this process
_UMASK_GUARD = threading.Lock()
_TERMINATING: list[int] = []         # signals received inside `terminate_gracefully`


class NoSpaceError(OSError):
    """The disk (or quota) is full; the message is one line naming the file."""


class FolderBusyError(RuntimeError):
    """Another process holds a `folder_lock`; the message says which."""


class Terminated(KeyboardInterrupt):
    """SIGTERM/SIGHUP/SIGINT turned into an exception by `terminate_gracefully` (so cleanups run)."""

    def __init__(self, signum: int):
        super().__init__("interrupted" if signum == signal.SIGINT else f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def is_partial_name(name: str) -> bool:
    """Whether ``name`` is a temporary output of semiblind (current or earlier naming)."""
    return (name.startswith(".") and PARTIAL_MARK in name) or bool(_LEGACY_PARTIAL.match(name))


def partial_name(path: str | os.PathLike) -> Path:
    """A fresh temporary name next to ``path``: ``.NAME.semiblind-partial-<12 hex>.SUFFIX`` (suffix kept,
    so writers choosing the format from it, e.g. matplotlib, work)."""
    path = Path(path)
    name = path.name if len(path.name) <= 180 else path.name[:180]     # stay below NAME_MAX with the mark
    return path.with_name(f".{name}{PARTIAL_MARK}{uuid.uuid4().hex[:12]}{path.suffix}")


def current_umask() -> int:
    """The process umask, read without changing it (Linux ``/proc``), else by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_GUARD:                # other threads may create files meanwhile: keep the window tiny
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def default_mode() -> int:
    """Mode of a file newly created by ``open(path, "w")``: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is "no space left on device" / "quota exceeded", including
    numpy's short-write message ("N requested and M written")."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, NoSpaceError) or (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)):
            return True
        if isinstance(exc, OSError) and re.search(r"\d+ requested and \d+ written", str(exc)):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _begin(path: str | os.PathLike, *, folder: bool) -> tuple[Path, Path, tuple[Path, int] | None]:
    """The start shared by `atomic_path` and `atomic_dir`: ``(shown, target, None)`` when ``path`` is already
    being written by this process (the caller yields ``target`` unchanged), else ``(shown, target, (tmp, fd))``
    with a locked temporary created beside it. Checks the destination before anything is written."""
    shown = Path(path)
    target = Path(os.path.realpath(shown))
    with _LIVE_GUARD:
        if target in _LIVE:
            return shown, target, None
    if not target.parent.is_dir():
        raise ValueError(f"output folder does not exist: {shown.parent}")
    if folder and target.exists() and not target.is_dir():
        raise ValueError(f"output {shown} is a file; give a folder name (NAME.zarr)")
    if not folder and target.is_dir():
        raise ValueError(f"output {shown} is a folder; give a file name")
    if target.parent not in _SWEPT:
        remove_stale_partials(target.parent)
        _SWEPT.add(target.parent)
    try:
        return shown, target, _create_locked(target, folder=folder)
    except OSError as exc:
        if is_disk_full(exc):
            raise NoSpaceError(f"no space left on device writing {shown}") from None
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Context manager yielding a temporary path to write ``path`` through, renamed onto it on success.

    The destination is resolved (a symbolic link is written through, as ``open`` would) and must not be
    a folder; its folder must exist. The temporary is created empty (mode 0o666 less the umask), locked
    by this process, and may be written by any library (``tifffile.imwrite(tmp, ...)``,
    ``fig.savefig(tmp)``); it is synced and renamed when the block ends without an exception, and
    removed otherwise. When ``path`` is itself a temporary of a surrounding `atomic_path` of this
    process (a batch job writing its output), it is yielded unchanged: the outer block commits it.

    Raises
    ------
    ValueError
        Missing output folder, or the destination is a folder (before anything is written).
    NoSpaceError
        The disk or quota is full ("no space left on device writing PATH"); nothing is left behind.
    """
    shown, target, started = _begin(path, folder=False)
    if started is None:
        yield target
        return
    tmp, fd = started
    try:
        yield tmp
        _set_final_mode(tmp, fd, target)
        _fsync(tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        _unlink(tmp)
        if is_disk_full(exc) and not isinstance(exc, NoSpaceError):    # (an inner file's error names its file)
            raise NoSpaceError(f"no space left on device writing {shown}") from None
        raise
    finally:
        with _LIVE_GUARD:
            _LIVE.pop(tmp, None)
        os.close(fd)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Context manager yielding an empty temporary folder to write the folder ``path`` through (an
    OME-Zarr image), renamed onto it on success and removed otherwise; `atomic_path` for folders.

    An existing folder at ``path`` is replaced: it is renamed to a temporary name, the new folder renamed
    in, then the old one deleted (a folder cannot be swapped in one step, so for an instant neither is
    under the final name; never a half-written one). Nested inside a surrounding `atomic_dir` of this
    process for the same path (a batch job writing its output), the temporary is yielded unchanged.

    Raises
    ------
    ValueError
        Missing output folder, or ``path`` is a file (before anything is written).
    NoSpaceError
        The disk or quota is full; nothing is left behind.
    """
    shown, target, started = _begin(path, folder=True)
    if started is None:
        yield target
        return
    tmp, fd = started
    try:
        yield tmp
        old = None
        if target.exists():               # moved aside, not deleted, until the new one is in place
            old = partial_name(target)
            os.rename(target, old)
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        _unlink(tmp)
        if is_disk_full(exc) and not isinstance(exc, NoSpaceError):
            raise NoSpaceError(f"no space left on device writing {shown}") from None
        raise
    finally:
        with _LIVE_GUARD:
            _LIVE.pop(tmp, None)
        os.close(fd)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file (UTF-8) atomically with `atomic_path`; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def reserve_space(path: str | os.PathLike) -> None:
    """Allocate the blocks of ``path`` for its whole current size (``posix_fallocate``).

    A sparse file filled through a memory map gets SIGBUS, not an error, when the disk fills up; after
    this call the disk-full case is an ``OSError`` here, before any work. Where the file system cannot
    allocate in advance, nothing is done.
    """
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    try:
        size = os.fstat(fd).st_size
        if size:
            os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


def remove_stale_partials(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Delete temporaries left in ``folder`` by dead processes (unlocked; see the module docstring).

    Temporaries of live writers (this or another process, e.g. a concurrent run) are left alone, and
    so is anything not named like a semiblind temporary. Temporary folders (`atomic_dir`) are removed
    with their content. Returns the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    candidates = list(folder.rglob(".*") if recursive else folder.glob(".*"))   # listed before any removal
    removed = []
    for p in candidates:
        if not is_partial_name(p.name) or p.is_symlink() or not (p.is_file() or p.is_dir()):
            continue
        if any(is_partial_name(q.name) for q in p.relative_to(folder).parents if q.name):
            continue                    # inside a temporary folder: judged with it
        with _LIVE_GUARD:
            if Path(os.path.realpath(p)) in _LIVE:
                continue
        if _unlink_if_abandoned(p):
            removed.append(p)
    return removed


def discard_live_partials() -> None:
    """Remove every temporary this process is writing (last resort before exiting on a signal)."""
    with _LIVE_GUARD:
        live = list(_LIVE)
    for p in live:
        _unlink(p)


@contextlib.contextmanager
def terminate_gracefully(signums: tuple[int, ...] | None = None) -> Iterator[None]:
    """Within the block, SIGTERM, SIGHUP and SIGINT raise `Terminated` (a ``KeyboardInterrupt``) in the main
    thread, so every `atomic_path` unwinds and removes its temporary, and the signal is remembered
    (`terminated_by`) should a library turn the exception into another one; the previous handlers are
    restored on exit.

    Signals that are ignored (``nohup``, background jobs) stay ignored. Outside the main thread this does
    nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if signums is None:
        signums = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, name))

    def handler(signum, _frame):
        _TERMINATING.append(signum)
        raise Terminated(signum)

    previous = {}
    _TERMINATING.clear()
    for s in signums:
        if signal.getsignal(s) is not signal.SIG_IGN:
            previous[s] = signal.signal(s, handler)
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
        discard_live_partials()


def terminated_by() -> int | None:
    """The signal received by the last `terminate_gracefully` block, if any (its `Terminated` may have been
    turned into another exception on the way: an import raises ``ImportError``, a library wraps it)."""
    return _TERMINATING[0] if _TERMINATING else None


def check_terminated() -> None:
    """Raise `Terminated` again when a signal arrived although its exception was turned into another one,
    so that code catching errors to go on (a batch marking one file failed) stops instead."""
    if _TERMINATING:
        raise Terminated(_TERMINATING[0])


def lock_holder(path: str | os.PathLike) -> str | None:
    """Who holds the `folder_lock` file ``path`` (its text, e.g. ``pid 123 on host``), or None when free."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_holder(fd)
    except OSError:
        return None
    finally:
        os.close(fd)          # closing releases a lock taken just now
    return None


@contextlib.contextmanager
def folder_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive lock file ``path`` (created, removed on exit) for the block.

    Raises
    ------
    FolderBusyError
        Another process holds it; the message names it (``pid N on HOST``).
    """
    path = Path(path)
    if fcntl is None:
        yield
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise FolderBusyError(holder or "another process") from None
        if _same_inode(path, fd):           # not removed by the previous holder meanwhile
            break
        os.close(fd)
    try:
        with contextlib.suppress(OSError):        # who holds it, for "busy" messages; a full disk is no reason to stop
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)                 # still locked: a waiting process re-checks the inode
        os.close(fd)


# -- internals ---------------------------------------------------------------------------------------

def _create_locked(target: Path, folder: bool = False) -> tuple[Path, int]:
    """Create, lock and register a fresh temporary file (or empty ``folder``) for ``target``; returns it and
    its fd."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = partial_name(target)
        try:
            if folder:
                os.mkdir(tmp, 0o777)            # the umask applies, as to a plain mkdir
                fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            else:
                fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)      # blocks only while a sweeper inspects it
            if not _same_inode(tmp, fd):        # a sweeper took it for stale in that instant: again
                os.close(fd)
                continue
        with _LIVE_GUARD:
            _LIVE[tmp] = fd
        return tmp, fd


def _set_final_mode(tmp: Path, fd: int, target: Path) -> None:
    """Mode of an existing destination kept; a new one has the umask's (already so when ``tmp`` is still
    the file created by `_create_locked`, else set here)."""
    try:
        wanted = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        wanted = None
    if _same_inode(tmp, fd):
        if wanted is not None:
            os.fchmod(fd, wanted)
    else:                                        # the writer replaced the file: it has the writer's mode
        os.chmod(tmp, default_mode() if wanted is None else wanted)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EROFS, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _same_inode(path: Path, fd: int) -> bool:
    try:
        a, b = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _unlink(path: Path) -> None:
    """Remove a temporary: a file, or a folder of `atomic_dir` with its content."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        return
    with contextlib.suppress(OSError):
        os.unlink(path)


def _unlink_if_abandoned(path: Path) -> bool:
    """Remove ``path`` when no process holds its lock (without locks: when older than `_STALE_AGE`)."""
    if fcntl is None:
        try:
            if time.time() - path.stat().st_mtime > _STALE_AGE:
                _unlink(path)
                return True
        except OSError:
            pass
        return False
    mode = os.O_RDONLY if path.is_dir() else os.O_RDWR        # a folder of `atomic_dir` is locked read-only
    try:
        fd = os.open(path, mode | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError:                     # gone, or not ours to judge
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not _same_inode(path, fd):
            return False
        _unlink(path)
        return True
    except OSError:                     # locked by a live writer (BlockingIOError), or cannot tell
        return False
    finally:
        os.close(fd)


def _read_holder(fd: int) -> str | None:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return None
    return text or None


def check_outputs(in_path: str | Path, **outputs: str | Path | None) -> list[Path]:
    """The given output paths (``None`` skipped) after checking, before any work, that each is a file name in
    an existing folder, none is (a link to) the input, and no two are the same file.

    Keywords name the outputs in the messages (``output=..., map=..., report=...``).

    Raises
    ------
    ValueError
        One line naming the offending path.
    """
    in_path = Path(in_path)
    seen: dict[Path, str] = {}
    given = []
    for role, p in outputs.items():
        if p is None:
            continue
        p = Path(p)
        resolved = p.resolve()
        if resolved == in_path.resolve() or (p.exists() and in_path.exists() and os.path.samefile(p, in_path)):
            raise ValueError(f"refusing to overwrite the input file {in_path}")
        if not resolved.parent.is_dir():
            raise ValueError(f"output folder does not exist: {p.parent}")
        if resolved.is_dir():
            raise ValueError(f"output {p} is a folder; give a file name")
        twin = seen.get(resolved) or next((r for q, r in seen.items() if q.exists() and p.exists()
                                           and os.path.samefile(q, p)), None)
        if twin is not None:
            raise ValueError(f"{p} is given as both the {twin} and the {role} file; give each output its own name")
        seen[resolved] = role
        given.append(p)
    return given
