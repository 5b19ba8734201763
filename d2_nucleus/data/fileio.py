# -*- coding: utf-8 -*-
"""
All-or-nothing outputs: everything is written to a temporary path beside the target and renamed
into place at the end (``os.replace``), so a failed run leaves no partial output, and an existing
target is replaced only when the caller says so.
"""
import contextlib
import json
import os
import shutil
import tempfile
from typing import Iterator

__all__ = ["check_target", "atomic_write_json", "atomic_write_text", "atomic_output_dir", "link_or_copy"]


def _exists(path: str) -> bool:
    """A file, or a non-empty folder (an empty folder may be filled)."""
    if os.path.isdir(path):
        return bool(os.listdir(path))
    return os.path.lexists(path)


def check_target(path: str, overwrite: bool) -> None:
    """Raise FileExistsError if ``path`` exists (non-empty folder or any file) and not ``overwrite``."""
    if not overwrite and _exists(path):
        raise FileExistsError(f"{path}: already exists (pass --overwrite to replace it)")


def atomic_write_text(path: str, text: str, overwrite: bool = False) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder."""
    check_target(path, overwrite)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a folder, expected a file path")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
