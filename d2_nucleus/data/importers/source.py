# -*- coding: utf-8 -*-
"""
What every importer hands the writer (:mod:`..importing`): one :class:`SourceImage` per image, its
nuclei as outlines (shapely geometries in level-0 pixels) or masks (crops on the image's grid),
and the shared look-ups of the importers: input files, the image beside an annotation file, the
image itself (plain file or slide region, through the project's readers) and its resolution.
"""
import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..raw import RawDataError, is_ignored_entry, natural_key
from ..rasterize import Crop
from ..resample import check_mpp

__all__ = [
    "Nucleus",
    "SourceImage",
    "ImageFile",
    "IMAGE_EXTENSIONS",
    "expand_inputs",
    "ImageFinder",
    "read_json",
]

logger = logging.getLogger(__name__)

#: Image files an annotation may refer to, in the order preferred when several share a name.
IMAGE_EXTENSIONS = (".svs", ".ndpi", ".mrxs", ".scn", ".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


@dataclass
class Nucleus:
    """One nucleus: an outline (``geometry``, level-0 px) or a mask (``crop`` on the image grid)."""

    where: str  # e.g. "Region 15", "feature 3", "label 7": names it in messages
    geometry: object = None
    crop: Optional[Crop] = None
    class_name: Optional[str] = None


@dataclass
class SourceImage:
    """
    One image of an import. ``load_nuclei()`` returns its :class:`Nucleus` list and the (height,
    width) of the grid their crops lie on (None: outlines only); outline formats parse at scan
    time and return the result, label images read the label file then. ``mpp``: the
    resolution the annotation file states (None: ask the image, then ``--mpp``). ``skipped``:
    objects the scan left out, as (reason, message) pairs for the report.
    """

    image_id: str
    image_file: str
    annotation_file: str
    load_nuclei: Callable[[], Tuple[List[Nucleus], Optional[Tuple[int, int]]]]
    mpp: Optional[float] = None
    mpp_from: str = ""
    skipped: List[Tuple[str, str]] = field(default_factory=list)


def expand_inputs(inputs: Sequence[str], suffixes: Tuple[str, ...], what: str) -> List[str]:
    """
    Files named by ``inputs``: files as given, folders -> their visible files ending in one of
    ``suffixes`` (not recursive), in natural order. Raises RawDataError for a missing input or a
    folder holding none.
    """
    files = []
    for path in inputs:
        if os.path.isdir(path):
            found = sorted(
                (os.path.join(path, n) for n in os.listdir(path)
                 if not is_ignored_entry(n) and n.lower().endswith(suffixes) and os.path.isfile(os.path.join(path, n))),
                key=lambda p: natural_key(os.path.basename(p)),
            )
            if not found:
                raise RawDataError(path, f"folder holds no {what} ({', '.join(suffixes)})")
            files.extend(found)
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise RawDataError(path, "no such file or folder")
    return files


class ImageFinder:
    """
    The image of an annotation: a file named ``<stem><image extension>`` (or exactly ``<stem>``,
    for QuPath's ``X.svs.geojson``) beside the annotation file or, with ``images``, anywhere under
    that folder (searched once, recursively). Files in ``exclude`` (the annotation files) never
    count; several candidates of different extensions: the first of :data:`IMAGE_EXTENSIONS`.
    """

    def __init__(self, images: Optional[str] = None, exclude: Iterable[str] = ()):
        if images is not None and not os.path.isdir(images):
            raise RawDataError(images, "--images: no such folder")
        self.images = images
        self.exclude = {os.path.realpath(p) for p in exclude}
        self._excluded_names = {os.path.basename(p) for p in self.exclude}
        self._index: Optional[Dict[str, List[str]]] = None

    def _candidates(self, folder: str, recursive: bool) -> Iterable[str]:
        if recursive:
            for root, dirs, names in os.walk(folder):
                dirs[:] = sorted(d for d in dirs if not is_ignored_entry(d))
                for n in sorted(names):
                    if not is_ignored_entry(n):
                        yield os.path.join(root, n)
        else:
            for n in sorted(os.listdir(folder)):
                if not is_ignored_entry(n):
                    yield os.path.join(folder, n)

    def _build(self, folder: str, recursive: bool) -> Dict[str, List[str]]:
        index: Dict[str, List[str]] = {}
        for path in self._candidates(folder, recursive):
            name = os.path.basename(path)
            stem, ext = os.path.splitext(name)
            if ext.lower() not in IMAGE_EXTENSIONS:
                continue
            if name in self._excluded_names and os.path.realpath(path) in self.exclude:
                continue
            index.setdefault(stem, []).append(path)
            index.setdefault(name, []).append(path)  # "X.svs" for "X.svs.geojson"
        return index

    def find(self, stem: str, annotation_file: str) -> str:
        if self.images is not None:
            if self._index is None:
                self._index = self._build(self.images, recursive=True)
            index, where = self._index, f"under {self.images}"
        else:
            folder = os.path.dirname(os.path.abspath(annotation_file))
            index, where = self._build(folder, recursive=False), f"beside it in {folder} (or pass --images)"
        found = index.get(stem, [])
        if not found:
            raise RawDataError(annotation_file, f"its image {stem}.* ({'/'.join(IMAGE_EXTENSIONS)}) is missing {where}")
        rank = {e: i for i, e in enumerate(IMAGE_EXTENSIONS)}
        found = sorted(found, key=lambda p: (rank.get(os.path.splitext(p)[1].lower(), 99), p))
        best = [p for p in found if os.path.splitext(p)[1].lower() == os.path.splitext(found[0])[1].lower()]
        if len(best) > 1:
            raise RawDataError(annotation_file, f"several images named {stem}{os.path.splitext(found[0])[1]} {where}: "
                                                f"{', '.join(best[:3])}; pass --images pointing at one")
        return found[0]


def read_json(path: str):
    """A JSON file (plain ``json``: data only), or RawDataError naming it."""
    import json

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise RawDataError(path, f"cannot be read ({e.strerror or e})") from None
    if not data.strip():
        raise RawDataError(path, "empty file")
    try:
        return json.loads(data.decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as e:
        raise RawDataError(path, f"not valid JSON ({' '.join(str(e).split())})") from None


class ImageFile:
    """
    An image read through the project's readers: a slide (any file OpenSlide opens) by region
    (:mod:`d2_nucleus.data.slide_readers`), anything else whole (:func:`d2_nucleus.data.image_io.read_image`).
    ``size`` is (height, width) of level 0; ``mpp`` its resolution from the file's metadata
    (slide properties, TIFF resolution tags) when plausible, else None; ``note`` says why a value
    was ignored.
    """

    def __init__(self, path: str):
        import openslide

        self.path = path
        self.note = ""
        self._array = None
        self._slide = None
        if not os.path.isfile(path):
            raise RawDataError(path, "image file does not exist")
        try:
            vendor = openslide.OpenSlide.detect_format(path)
        except (openslide.OpenSlideError, OSError):
            vendor = None
        raw_mpp = None
        if vendor is not None:
            from ..slide_readers import OpenSlideSource, SlideError

            try:
                self._slide = OpenSlideSource(path)
            except SlideError as e:
                raise RawDataError(path, f"cannot open slide ({e})") from None
            width, height = self._slide.dimensions
            raw_mpp = self._slide.mpp[0] if self._slide.mpp else None
        else:
            self._array = self._read_plain(path)
            height, width = self._array.shape[:2]
            if path.lower().endswith((".tif", ".tiff")):
                raw_mpp = tiff_mpp(path)
        self.size = (int(height), int(width))
        self.is_slide = self._slide is not None
        self.mpp = None
        if raw_mpp is not None:
            try:
                self.mpp = check_mpp(raw_mpp, "its resolution metadata")
            except ValueError as e:
                self.note = f"{path}: {e}, ignored"

    @staticmethod
    def _read_plain(path: str) -> np.ndarray:
        from ..image_io import BadImageError, read_image

        try:
            return read_image(path, format="RGB")
        except BadImageError as e:
            msg = str(e)
            raise RawDataError(path, msg[len(path) + 2:] if msg.startswith(path + ": ") else msg) from None

    def read(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        """(height, width, 3) RGB uint8 of level 0 from pixel (x, y)."""
        if self._slide is not None:
            return self._slide.read_region(x, y, 0, width, height)
        return self._array[y : y + height, x : x + width]

    def close(self) -> None:
        if self._slide is not None:
            self._slide.close()
        self._array = self._slide = None


def tiff_mpp(path: str) -> Optional[float]:
    """Microns per pixel from a TIFF's resolution tags (first page), None when absent or unreadable."""
    import tifffile

    from ..slide_readers import tiff_mpp  # the one reader of TIFF resolution tags

    try:
        with tifffile.TiffFile(path) as tif:
            mpp = tiff_mpp(tif.pages[0])
    except (OSError, ValueError, tifffile.TiffFileError):
        return None
    return mpp[0] if mpp else None
