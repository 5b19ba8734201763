# -*- coding: utf-8 -*-
"""Atomic file writes: write to a temporary file in the same folder, then rename it."""
import contextlib
import os
import tempfile

__all__ = ["atomic_write", "check_writable", "OutputExistsError"]


class OutputExistsError(FileExistsError):
    """An output file exists and overwriting was not asked for."""


def check_writable(path: str, overwrite: bool = False) -> None:
    """
    Fail early, before any work, if ``path`` cannot be written: its folder cannot be created or
    is not writable, or the file exists and ``overwrite`` is False.
    """
    if os.path.isdir(path):
        raise IsADirectoryError(f"output {path!r} is a folder")
    if os.path.exists(path) and not overwrite:
        raise OutputExistsError(f"output {path!r} exists; pass --overwrite to replace it")
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
    if os.path.exists(path) and not overwrite:
        raise OutputExistsError(f"output {path!r} exists; pass --overwrite to replace it")
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
