# -*- coding: utf-8 -*-
"""
Point annotations of nucleus types: the centres a pathologist clicks, each with a class or none.

Readers (each returns a list of :class:`PointAnnotations`, one per image):

* :func:`.crchisto.read_crchisto`: CRCHistoPhenotypes' MATLAB files (``scipy.io.loadmat``: plain arrays,
  no code), in both layouts of the dataset: one folder per image (``imgN/imgN.bmp``,
  ``imgN_detection.mat``, ``imgN_<class>.mat``), and the official download's ``Detection/imgN/``
  + ``Classification/imgN/``. Every file holds a K x 2 array ``detection`` of (x, y) centres.
* :func:`read_qupath_points`: QuPath point annotations exported as GeoJSON (Point / MultiPoint
  features whose ``properties.classification.name`` is the class; a FeatureCollection, one
  Feature, or a list of Features as QuPath 0.2 writes), one ``<image stem>.geojson`` per image.
* :func:`read_points_csv`: a CSV with the columns ``image,x,y,class`` (``class`` empty: no class).

Coordinates are returned as *pixel indices* (x right, y down, the centre of pixel (i, j) is
(i, j)), the convention of the measurement table's ``centroid_x/y``. QuPath's coordinates put
pixel (0, 0) on [0, 1) x [0, 1), so 0.5 is subtracted; CRCHisto's are MATLAB's, 1-based, so 1 is
subtracted (measured against the centres of the nuclei the model segments: BENCHMARKS.md
"Nucleus types": the points lie 1.2 px right of and 0.8 px below the centroids in CRCHisto's own
numbers); the CSV is in pixel indices already. A point more than half a pixel beyond the image's
edge is an error naming the file; nearer ones are moved onto the edge (:data:`EDGE_TOLERANCE_PX`).

The GeoJSON parsing (features, QuPath class names), the JSON reading, the image beside or under a
folder and the resolution check are the annotation importers' (:mod:`d2_nucleus.data.importers`):
one owner of each format.
"""
import csv
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "BadPointsError",
    "PointAnnotations",
    "read_points",
    "read_points_csv",
    "read_qupath_points",
    "POINT_FORMATS",
]

POINT_FORMATS = ("crchisto", "qupath", "csv")


class BadPointsError(ValueError):
    """A point annotation file that cannot be used; the message names the file."""


@dataclass
class PointAnnotations:
    """
    The annotated points of one image.

    Attributes:
        image: the image file.
        xy: (N, 2) float64 centres in pixel indices of the image.
        labels: (N,) int64 class index into ``class_names``; -1: a nucleus without a class
            (counted for detection, not for types).
        class_names: the classes of the whole set, in index order.
        mpp: micrometres per pixel of the image (None: unknown).
        source: the annotation file(s), for messages.
        merge: CRCHisto only: how the class files were joined to the detection file
            (``{"snapped": class points a little away from their detection point,
            "added": class points without one}``).
    """

    image: str
    xy: np.ndarray
    labels: np.ndarray
    class_names: Tuple[str, ...]
    mpp: Optional[float] = None
    source: str = ""
    merge: Optional[Dict[str, int]] = None

    @property
    def name(self) -> str:
        return os.path.splitext(os.path.basename(self.image))[0]

    def __len__(self) -> int:
        return len(self.xy)


def image_size(path: str) -> Tuple[int, int]:
    """(height, width) of an image from its header (nothing decoded)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, ValueError) as e:
        raise BadPointsError(f"{path}: cannot read the image: {' '.join(str(e).split())}") from None
    return height, width


#: Points up to this many pixels beyond the image's edge are moved onto it (a click on the border:
#: 10 of CRCHisto's 41,055 points lie up to 0.35 px outside); farther is an error.
EDGE_TOLERANCE_PX = 0.5


def check_inside(xy: np.ndarray, height: int, width: int, source: str) -> np.ndarray:
    """
    ``xy`` (pixel indices) with the points within :data:`EDGE_TOLERANCE_PX` of the image's edge
    (x in [-0.5, width - 0.5], y likewise) moved onto it; :class:`BadPointsError` for the first
    point farther outside.
    """
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    if not len(xy):
        return xy
    t = EDGE_TOLERANCE_PX
    bad = ~np.isfinite(xy).all(axis=1)
    with np.errstate(invalid="ignore"):
        bad |= (xy[:, 0] < -0.5 - t) | (xy[:, 0] > width - 0.5 + t) | (xy[:, 1] < -0.5 - t) | (xy[:, 1] > height - 0.5 + t)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise BadPointsError(
            f"{source}: point {i} at x={xy[i, 0]:.6g}, y={xy[i, 1]:.6g} (pixel indices) lies outside the "
            f"{width}x{height} image ({int(bad.sum())} such point(s)); are the coordinates for this image?"
        )
    return np.stack([np.clip(xy[:, 0], -0.5, width - 0.5), np.clip(xy[:, 1], -0.5, height - 0.5)], axis=1)


def check_not_empty(xy: np.ndarray, image: str, source: str) -> None:
    """An image without any annotated point can neither train nor be evaluated (every detection
    would count as false): a one-line error."""
    if not len(xy):
        raise BadPointsError(f"{source}: no points for image {os.path.basename(image)}; "
                             "annotate it or leave it out")


def check_mpp(mpp: Optional[float]) -> Optional[float]:
    """The images' resolution (None: unknown), checked by the importers' rule."""
    from ..data.resample import check_mpp as _check

    if mpp is None:
        return None
    try:
        return _check(mpp, "mpp")
    except ValueError as e:
        raise BadPointsError(str(e)) from None


# -------------------------------------------------------------------------------------------------
# QuPath GeoJSON points
# -------------------------------------------------------------------------------------------------
def _parse_qupath(path: str) -> Tuple[np.ndarray, List[Optional[str]]]:
    from ..data.importers.geojson import class_name, geojson_features
    from ..data.importers.source import read_json
    from ..data.raw import RawDataError

    try:
        features = geojson_features(read_json(path), path)
    except RawDataError as e:
        raise BadPointsError(str(e)) from None
    xy, names = [], []
    for i, feature in enumerate(features):
        if not isinstance(feature, dict):
            raise BadPointsError(f"{path}: feature {i} is not an object")
        geometry = feature.get("geometry") or {}
        kind, coords = geometry.get("type"), geometry.get("coordinates")
        if kind not in ("Point", "MultiPoint"):
            continue  # regions, lines: not point annotations
        pts = [coords] if kind == "Point" else coords
        try:
            arr = np.asarray(pts, dtype=np.float64).reshape(-1, 2) if pts else np.zeros((0, 2))
        except (TypeError, ValueError):
            raise BadPointsError(f"{path}: feature {i}: {kind} coordinates are not numbers [x, y]") from None
        xy.append(arr)
        names += [class_name(feature.get("properties"))] * len(arr)
    xy = np.concatenate(xy) if xy else np.zeros((0, 2))
    return xy - 0.5, names  # QuPath: pixel (0, 0) covers [0, 1)


def _label(names: Sequence[Optional[str]], classes: Sequence[str], source: str) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({n for n in names if n is not None and n not in index})
    if unknown:
        raise BadPointsError(f"{source}: unknown class name(s) {unknown}; the classes are {list(classes)}")
    return np.array([index[n] if n is not None else -1 for n in names], np.int64)


class _Images:
    """The image of each stem under ``images_dir`` (:class:`d2_nucleus.data.importers.source.ImageFinder`)."""

    def __init__(self, images_dir: str, exclude=()):
        from ..data.importers.source import ImageFinder
        from ..data.raw import RawDataError

        if not os.path.isdir(images_dir):
            raise BadPointsError(f"{images_dir}: images folder does not exist")
        self._error = RawDataError
        self._finder = ImageFinder(images_dir, exclude=exclude)

    def find(self, stem: str, source: str, where: str = "") -> str:
        try:
            return self._finder.find(stem, source)
        except self._error as e:
            raise BadPointsError(f"{source}{where}: {e.problem}") from None


def _finish(per_image: Dict[str, Tuple[np.ndarray, List[Optional[str]], str]], classes, mpp) -> List[PointAnnotations]:
    """Label, bound-check and wrap per-image points; ``classes`` default: the sorted names found."""
    if classes is None:
        classes = sorted({n for _, names, _ in per_image.values() for n in names if n is not None})
    classes = tuple(classes)
    if not classes:
        raise BadPointsError("no point has a class name; pass the classes or annotate some points with one")
    out = []
    for image, (xy, names, source) in sorted(per_image.items()):
        labels = _label(names, classes, source)
        height, width = image_size(image)
        xy = check_inside(xy, height, width, source)
        check_not_empty(xy, image, source)
        out.append(PointAnnotations(image, xy, labels, classes, mpp, source))
    return out


def read_qupath_points(points_dir: str, images_dir: str, classes: Optional[Sequence[str]] = None,
                       mpp: Optional[float] = None) -> List[PointAnnotations]:
    """
    Read ``<stem>.geojson`` (or ``.json``) files of QuPath point annotations from ``points_dir``,
    each for the image ``<stem>.*`` in ``images_dir``.

    Args:
        classes: the class names in index order (default: every name found, sorted); a point
            of another class is an error. Points without a classification get label -1.
        mpp: the images' resolution in um/px.
    """
    mpp = check_mpp(mpp)
    if not os.path.isdir(points_dir):
        raise BadPointsError(f"{points_dir}: points folder does not exist")
    files = [os.path.join(points_dir, n) for n in sorted(os.listdir(points_dir))
             if os.path.splitext(n)[1].lower() in (".geojson", ".json") and not n.startswith(".")]
    images = _Images(images_dir, exclude=files)
    per_image = {}
    for path in files:
        xy, names = _parse_qupath(path)
        per_image[images.find(os.path.splitext(os.path.basename(path))[0], path)] = (xy, names, path)
    if not per_image:
        raise BadPointsError(f"{points_dir}: no .geojson point files")
    return _finish(per_image, classes, mpp)


# -------------------------------------------------------------------------------------------------
# CSV: image,x,y,class
# -------------------------------------------------------------------------------------------------
def read_points_csv(path: str, images_dir: str, classes: Optional[Sequence[str]] = None,
                    mpp: Optional[float] = None) -> List[PointAnnotations]:
    """
    Read a CSV of points with a header ``image,x,y,class`` (more columns are ignored): ``image``
    a file name in ``images_dir`` (or its stem), ``x``, ``y`` pixel indices, ``class`` a name or
    empty (no class). ``classes`` and ``mpp`` as :func:`read_qupath_points`.
    """
    from ..data.importers.source import IMAGE_EXTENSIONS

    mpp = check_mpp(mpp)
    images = _Images(images_dir, exclude=[path])
    per_image: Dict[str, Tuple[List, List, str]] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = {"image", "x", "y", "class"} - set(reader.fieldnames or [])
            if missing:
                raise BadPointsError(f"{path}: missing column(s) {sorted(missing)}; the header must be image,x,y,class")
            for line, row in enumerate(reader, start=2):
                name = (row["image"] or "").strip()
                stem = os.path.splitext(name)[0] if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS else name
                image = images.find(stem, path, f", line {line}")
                try:
                    x, y = float(row["x"]), float(row["y"])
                except (TypeError, ValueError):
                    raise BadPointsError(f"{path}, line {line}: x and y must be numbers") from None
                entry = per_image.setdefault(image, ([], [], path))
                entry[0].append((x, y))
                entry[1].append((row["class"] or "").strip() or None)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BadPointsError(f"{path}: not a readable CSV file: {' '.join(str(e).split())}") from None
    if not per_image:
        raise BadPointsError(f"{path}: no points")
    arrays = {k: (np.asarray(xy, np.float64).reshape(-1, 2), names, src) for k, (xy, names, src) in per_image.items()}
    return _finish(arrays, classes, mpp)


def read_points(fmt: str, source: str, images_dir: Optional[str] = None, classes: Optional[Sequence[str]] = None,
                mpp: Optional[float] = None) -> List[PointAnnotations]:
    """Read points of format ``fmt`` (:data:`POINT_FORMATS`); CRCHisto needs no ``images_dir``."""
    if fmt == "crchisto":
        from .crchisto import CRCHISTO_MPP, read_crchisto

        return read_crchisto(source, mpp=CRCHISTO_MPP if mpp is None else mpp)
    if images_dir is None:
        raise BadPointsError(f"{fmt} points need the folder of their images (--images)")
    if fmt == "qupath":
        return read_qupath_points(source, images_dir, classes, mpp)
    if fmt == "csv":
        return read_points_csv(source, images_dir, classes, mpp)
    raise BadPointsError(f"unknown point format {fmt!r}; one of {POINT_FORMATS}")
