# -*- coding: utf-8 -*-
"""
All-or-nothing outputs, shared by data preparation, training, evaluation and prediction:
everything is written to a temporary path beside the target and renamed into place at the end
(``os.replace``), so a failed run leaves no partial output, and an existing target is replaced only
when the caller says so (``--overwrite``).

* :func:`atomic_write` / :func:`atomic_output_dir`: one file / one folder, all or nothing.
* :func:`output_transaction`: several files (e.g. one overlay per image and answer.json), all or
  none: while it is active, :func:`atomic_write` keeps each finished file under its temporary
  name, and the transaction renames them all at its end, or deletes them all on an error.
* :func:`check_not_input`: no output is one of the run's inputs (or a folder holding one), after
  resolving symlinks; ``--overwrite`` never overrides it. Every CLI that writes calls it first.
* Temporary names are ``.<target>.d2tmp-<pid>-<random>.tmp`` (hidden, beside the target). A run
  killed with SIGKILL cannot clean up; the next write into the same folder removes the temporary
  files of processes that no longer run (:func:`remove_stale_temps`), so they neither block nor
  pollute it.
"""
import contextlib
import json
import os
import re
import shutil
import tempfile
import threading
from typing import Iterable, Iterator, List, Optional, Tuple

__all__ = [
    "OutputExistsError", "OutputIsInputError", "check_not_input", "check_target", "check_writable",
    "atomic_write", "atomic_write_text", "atomic_write_json", "atomic_output_dir", "link_or_copy",
    "check_writable_dir", "output_transaction", "remove_stale_temps",
]

_TEMP_TAG = "d2tmp"
# .<name>.d2tmp-<pid>-<random>.tmp (files, folders) and .<name>.d2tmp-<pid>-<random>.old (the
# previous output while a folder is swapped)
_TEMP_RE = re.compile(r"^\..+\." + _TEMP_TAG + r"-(\d+)-[^.]*\.(tmp|old)$")
_live_temps = set()  # this process's temporary paths in use
_cleaned_folders = set()
_writable_folders = set()
_lock = threading.RLock()


def _temp_prefix(path: str) -> str:
    return f".{os.path.basename(path)}.{_TEMP_TAG}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temps(folder: str) -> List[str]:
    """
    Remove the temporary files and folders that a killed run of this module left in ``folder``
    (names ``.<target>.d2tmp-<pid>-*.tmp`` of a process that no longer runs, or of this process
    but not in use). ``.old`` folders (a previous output being swapped out when the run was
    killed) are removed only when their target exists again. Returns the removed paths.
    """
    removed = []
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return removed
    for name in names:
        m = _TEMP_RE.match(name)
        if not m:
            continue
        path = os.path.join(folder, name)
        pid = int(m.group(1))
        with _lock:
            if path in _live_temps or (pid != os.getpid() and _pid_alive(pid)):
                continue
        if m.group(2) == "old":
            target = name[1:].split("." + _TEMP_TAG + "-")[0]
            if not os.path.lexists(os.path.join(folder, target)):
                continue  # the previous output itself: leave it for the user
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
        removed.append(path)
    return removed


def _clean_once(folder: str) -> None:
    """:func:`remove_stale_temps` for ``folder``, once per process."""
    folder = os.path.abspath(folder)
    with _lock:
        if folder in _cleaned_folders:
            return
        _cleaned_folders.add(folder)
    remove_stale_temps(folder)


class OutputExistsError(FileExistsError):
    """An output exists and overwriting was not asked for."""


class OutputIsInputError(ValueError):
    """An output would be (or replace a folder holding) one of the run's inputs, or another output."""


def _parents(path: str) -> Iterator[str]:
    while os.path.dirname(path) != path:
        path = os.path.dirname(path)
        yield path


def check_not_input(outputs: Iterable[Optional[str]], inputs: Iterable[Optional[str]], outside: bool = False) -> None:
    """
    Refuse, before anything is written, an output that is one of the run's ``inputs`` (files and
    folders it reads) once symlinks are resolved (``os.path.realpath``), or a folder holding one.
    ``outputs``: every file the run writes and each folder it replaces or deletes as a whole (not
    a folder it writes files into: give those files), no two the same file. None entries are
    skipped. No flag overrides this: callers check it before :func:`check_writable` (whose refusal
    suggests ``--overwrite``). ``outside``: no output inside an input folder either (a dataset made
    from a raw one is kept apart from it).

    Raises:
        OutputIsInputError: one line naming the output and the input.
    """
    exact, holders = {}, {}  # realpath of an input -> it; realpath of each folder above one -> it
    for given in (p for p in inputs if p and "://" not in p):  # a URL (weights) is not a file here
        exact.setdefault(os.path.realpath(given), given)
        for parent in _parents(os.path.realpath(given)):
            holders.setdefault(parent, given)
    seen = {}
    for out in filter(None, outputs):
        real = os.path.realpath(out)
        if real in seen:
            other = f" (also {seen[real]})" if seen[real] != out else ""
            raise OutputIsInputError(f"two outputs would be the same file {out}{other}: choose other outputs")
        seen[real] = out
        inside = next((exact[p] for p in _parents(real) if p in exact), None) if outside else None
        if real in exact:
            what, given = "is the input", exact[real] + (f" (both are {real})" if real not in (out, exact[real]) else "")
        elif real in holders:
            what, given = "would replace the folder holding the input", holders[real]
        elif inside:
            what, given = "would be inside the input", inside
        else:
            continue
        raise OutputIsInputError(f"output {out} {what} {given}: choose another output (no flag lets an output "
                                 "replace an input)")


def _exists(path: str) -> bool:
    """A file, or a non-empty folder (an empty folder may be filled)."""
    if os.path.isdir(path):
        return bool(os.listdir(path))
    return os.path.lexists(path)


def check_target(path: str, overwrite: bool) -> None:
    """Raise OutputExistsError if ``path`` exists (non-empty folder or any file) and not ``overwrite``."""
    if not overwrite and _exists(path):
        raise OutputExistsError(f"{path}: already exists (pass --overwrite to replace it)")


def check_writable(path: str, overwrite: bool = False) -> None:
    """
    Fail early, before any work, if ``path`` cannot be written: its folder cannot be created or
    is not writable, or the file exists and ``overwrite`` is False.
    """
    if os.path.isdir(path):
        raise IsADirectoryError(f"output {path!r} is a folder")
    check_target(path, overwrite)
    # The folder, or the closest existing folder above it (the writer creates the rest), must be
    # a writable folder. Nothing is created here.
    folder = os.path.dirname(os.path.abspath(path))
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NotADirectoryError(f"cannot create output folder {folder!r}: {existing!r} is a file")
    _probe_writable(existing)


def _probe_writable(folder: str) -> None:
    """Raise PermissionError unless a file can be created in ``folder`` (also as root on a
    read-only file system, where os.access says yes)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder {folder!r} is not writable")
    key = os.path.abspath(folder)
    if key in _writable_folders:  # probed once per process (predict checks 3 files per image)
        return
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=f".{_TEMP_TAG}-probe-"):
            pass
    except OSError as e:
        raise PermissionError(f"output folder {folder!r} is not writable: {e.strerror or e}") from None
    _writable_folders.add(key)


def check_writable_dir(path: str) -> None:
    """
    Fail early, before any work, if the folder ``path`` cannot be created or written (nothing is
    created): it is a file, a file is in its way, or it (or the closest existing folder above
    it) is not writable.
    """
    path = os.path.abspath(path)
    existing = path
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        if existing == path:
            raise NotADirectoryError(f"output folder {path!r} is a file")
        raise NotADirectoryError(f"cannot create output folder {path!r}: {existing!r} is a file")
    _probe_writable(existing)


class _Transaction:
    def __init__(self):
        self.staged: List[Tuple[str, str]] = []  # (temporary path, target)
        self.created_dirs: List[str] = []  # folders made for staged files, removed again on abort

    def commit(self) -> None:
        # Later writes to the same target win, as they would without the transaction.
        for tmp, path in self.staged:
            os.replace(tmp, path)
            with _lock:
                _live_temps.discard(tmp)
        self.staged = []

    def abort(self) -> None:
        for tmp, _ in self.staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            with _lock:
                _live_temps.discard(tmp)
        self.staged = []
        for folder in sorted(self.created_dirs, key=len, reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only if empty
        self.created_dirs = []


_active: Optional[_Transaction] = None


@contextlib.contextmanager
def output_transaction():
    """
    All of the files written with :func:`atomic_write` (and the helpers built on it: the
    exporters, :func:`atomic_write_json`) while this context is active appear together at its
    end, or none of them does: on an exception (or Ctrl-C) every one is deleted, and targets that
    existed keep their old content. After SIGKILL only hidden temporary files remain, which the
    next run removes (module docstring). One transaction at a time per process; writes from
    other threads join it.

        with output_transaction():
            for image in images:
                write_overlay(..., vis_path(image))
            write_answer(...)
    """
    global _active
    with _lock:
        if _active is not None:
            raise RuntimeError("output_transaction: a transaction is already active")
        _active = txn = _Transaction()
    try:
        yield txn
        txn.commit()
    except BaseException:
        txn.abort()
        raise
    finally:
        with _lock:
            _active = None


@contextlib.contextmanager
def atomic_write(path: str, overwrite: bool = False, mode: str = "wb"):
    """
    Open a temporary file next to ``path`` for writing; on success it replaces ``path``
    (``os.replace``), on error it is deleted, so ``path`` is either complete or untouched.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    check_target(path, overwrite)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a folder, expected a file path")
    folder = os.path.dirname(os.path.abspath(path))
    with _lock:
        if _active is not None:
            missing = folder
            while not os.path.lexists(missing):
                _active.created_dirs.append(missing)
                missing = os.path.dirname(missing)
    os.makedirs(folder, exist_ok=True)
    _clean_once(folder)
    with _lock:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=_temp_prefix(path), suffix=".tmp")
        _live_temps.add(tmp)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the result the permissions of a normally created file
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with _lock:
            txn = _active
            if txn is not None:
                txn.staged.append((tmp, os.path.abspath(path)))
                return
        os.replace(tmp, path)
        with _lock:
            _live_temps.discard(tmp)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        with _lock:
            _live_temps.discard(tmp)
        _raise_naming(e, path)
        raise


def _raise_naming(e: BaseException, path: str) -> None:
    """An OSError of writing (ENOSPC "No space left on device", EDQUOT, EIO, EFBIG, ...) that names
    no file is raised again naming ``path``: the user learns which output did not fit."""
    if isinstance(e, OSError) and e.errno and not e.filename and not isinstance(e, OutputExistsError):
        raise OSError(e.errno, f"{path}: {e.strerror or os.strerror(e.errno)} (writing it; nothing was written)") from None


def atomic_write_text(path: str, text: str, overwrite: bool = False) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, overwrite, mode="w") as f:
        f.write(text)


def atomic_write_json(path: str, obj, overwrite: bool = False) -> None:
    """Write ``obj`` as JSON (compact, deterministic) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, separators=(",", ":")), overwrite)


@contextlib.contextmanager
def atomic_output_dir(path: str, overwrite: bool = False) -> Iterator[str]:
    """
    Yield a temporary folder beside ``path``; on normal exit it replaces ``path``, on an exception
    it is deleted and ``path`` is untouched.

    Raises:
        FileExistsError: ``path`` exists (a file or a non-empty folder) and not ``overwrite``.
    """
    if _active is not None:
        raise RuntimeError("atomic_output_dir cannot be used inside an output_transaction")
    check_target(path, overwrite)
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    _clean_once(parent)
    with _lock:
        tmp = tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=parent)
        _live_temps.add(tmp)
    try:
        os.chmod(tmp, 0o755)
        yield tmp
        if os.path.lexists(path):
            trash = tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".old", dir=parent)
            old = os.path.join(trash, "old")
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)  # put the previous output back
                raise
            finally:
                shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_naming(e, path)
        raise
    finally:
        with _lock:
            _live_temps.discard(tmp)


def link_or_copy(src: str, dst: str) -> bool:
    """Hard-link ``src`` to ``dst``, or copy it where linking is not possible; True if linked."""
    try:
        os.link(src, dst)
        return True
    except OSError:
        shutil.copyfile(src, dst)
        return False
