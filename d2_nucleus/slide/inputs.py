# -*- coding: utf-8 -*-
"""The slides a run reads: listing files and folders, their output stems, and file hashes."""
import hashlib
import os
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ["SLIDE_EXTENSIONS", "file_sha256", "list_slides", "slide_stem", "tissue_mask_for"]

SLIDE_EXTENSIONS = (
    ".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm",
    ".png", ".jpg", ".jpeg", ".bmp",
)


def slide_stem(path: str) -> str:
    """The name a slide's outputs are named after: its file name without the extension."""
    return os.path.splitext(os.path.basename(path))[0]


def list_slides(inputs: Sequence[str]) -> List[str]:
    """Slide files from files and folders (a folder: its files with a slide/image extension)."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(
                os.path.join(item, n) for n in os.listdir(item)
                if n.lower().endswith(SLIDE_EXTENSIONS) and not n.startswith(".")
                and os.path.isfile(os.path.join(item, n))
            )
            if not found:
                raise ValueError(f"no slides ({', '.join(SLIDE_EXTENSIONS)}) in folder {item!r}")
            paths += found
        else:
            paths.append(item)
    stems = [slide_stem(p) for p in paths]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise ValueError(f"slides share file names {dup}; their outputs would collide")
    return paths


def tissue_mask_for(mask: str, path: str) -> Optional[str]:
    """
    The tissue mask of slide ``path`` from ``SLIDE.TISSUE.MASK`` (``mask``): the file itself, or
    ``<slide stem>.png`` in a folder of masks (None where the folder has none: tissue detection).
    """
    if not mask:
        return None
    if os.path.isdir(mask):
        candidate = os.path.join(mask, slide_stem(path) + ".png")
        return candidate if os.path.isfile(candidate) else None
    return mask


_HASHES: Dict[Tuple[str, int, int], str] = {}


def file_sha256(path: str) -> str:
    """SHA-256 of a file (cached by path, size and mtime)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]
