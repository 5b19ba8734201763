# -*- coding: utf-8 -*-
"""
All-or-nothing outputs, shared by data preparation, evaluation and prediction: everything is
written to a temporary path beside the target and renamed into place at the end (``os.replace``),
so a failed run leaves no partial output, and an existing target is replaced only when the caller
says so (``--overwrite``).
"""
import contextlib
import json
import os
import shutil
import tempfile
from typing import Iterator

__all__ = [
    "OutputExistsError",
    "check_target",
    "check_writable",
    "atomic_write",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_output_dir",
    "link_or_copy",
]


class OutputExistsError(FileExistsError):
    """An output exists and overwriting was not asked for."""


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
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder {existing!r} is not writable")


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
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the result the permissions of a normally created file
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
    check_target(path, overwrite)
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    try:
        os.chmod(tmp, 0o755)
        yield tmp
        if os.path.lexists(path):
            trash = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".old", dir=parent)
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
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def link_or_copy(src: str, dst: str) -> bool:
    """Hard-link ``src`` to ``dst``, or copy it where linking is not possible; True if linked."""
    try:
        os.link(src, dst)
        return True
    except OSError:
        shutil.copyfile(src, dst)
        return False
