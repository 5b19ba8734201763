# -*- coding: utf-8 -*-
"""
Aperio ImageScope XML (MoNuSeg's format, what ImageScope and many annotation tools export)::

    <Annotations MicronsPerPixel="0.252700">
      <Annotation Id="1" Name="layer name" ...>
        <Regions>
          <Region Id="15" Type="0" Text="" NegativeROA="0" ...>
            <Vertices><Vertex X="114.4" Y="109.2"/> ...</Vertices>

One nucleus a ``<Region>``: vertices in level-0 pixels of the image ``<stem>.svs/.tif/.png/...``
beside the file (or under ``--images``). Region types: 0 polygon / free hand, 1 rectangle (their
vertices), 2 ellipse (inscribed in the box of its two vertices); rulers, arrows and other types
are skipped, and so are negative regions (``NegativeROA="1"``, exclusions). The class name is
the region's ``Text``, else its layer's ``Name`` (None when both are empty). ``MicronsPerPixel``
is the file's resolution (absent or 0: the image's, then ``--mpp``).

Parsed with lxml without entity resolution, DTD loading or network access (a file cannot make
the parser read other files or URLs).
"""
import os
from typing import List, Optional, Sequence

import numpy as np

from ..raw import RawDataError
from .source import ImageFinder, Nucleus, SourceImage, expand_inputs

__all__ = ["SUFFIXES", "scan"]

SUFFIXES = (".xml",)
_POLYGON, _RECTANGLE, _ELLIPSE = "0", "1", "2"
_ELLIPSE_SEGMENTS = 64


def _parser():
    from lxml import etree

    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def _float(value, path: str, where: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise RawDataError(path, f"{where}: not a number: {value!r}") from None
    if not np.isfinite(v):
        raise RawDataError(path, f"{where}: not a finite number: {value!r}")
    return v


def _vertices(vertices, path: str, where: str) -> np.ndarray:
    """(n, 2) float64 X, Y of ``<Vertex>`` elements; RawDataError naming the first bad value."""
    try:
        xy = np.array([(v.get("X"), v.get("Y")) for v in vertices], dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        xy = None
    if xy is None or not np.isfinite(xy).all():  # find the culprit for the message
        for v in vertices:
            _float(v.get("X"), path, f"{where} X")
            _float(v.get("Y"), path, f"{where} Y")
    return xy


def _ellipse(xy: np.ndarray):
    from shapely.geometry import Polygon

    (xa, ya), (xb, yb) = xy.min(axis=0), xy.max(axis=0)
    t = np.linspace(0, 2 * np.pi, _ELLIPSE_SEGMENTS, endpoint=False)
    cx, cy, rx, ry = (xa + xb) / 2, (ya + yb) / 2, (xb - xa) / 2, (yb - ya) / 2
    return Polygon(np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1))


def parse(path: str):
    """
    Returns:
        (nuclei, skipped (reason, message) pairs, MicronsPerPixel or None)

    Raises:
        RawDataError: unreadable, empty or malformed file (one line naming it).
    """
    from lxml import etree
    from shapely.geometry import Polygon

    try:
        tree = etree.parse(path, _parser())
    except OSError as e:
        raise RawDataError(path, f"cannot be read ({e})") from None
    except etree.XMLSyntaxError as e:
        msg = "empty file" if os.path.getsize(path) == 0 else f"not valid XML ({' '.join(str(e).split())})"
        raise RawDataError(path, msg) from None
    root = tree.getroot()
    if root.tag != "Annotations":
        raise RawDataError(path, f"not Aperio ImageScope XML (root element <{root.tag}>, expected <Annotations>)")
    mpp = root.get("MicronsPerPixel")
    mpp = _float(mpp, path, "MicronsPerPixel") if mpp not in (None, "") else None
    nuclei: List[Nucleus] = []
    skipped = []
    for layer in root.iter("Annotation"):
        layer_name = (layer.get("Name") or "").strip() or None
        for region in layer.iter("Region"):
            where = f"Region {region.get('Id', '?')}"
            rtype = region.get("Type", _POLYGON)
            if region.get("NegativeROA", "0") not in ("0", ""):
                skipped.append(("negative region", f"{path}: {where} is a negative region (exclusion), skipped"))
                continue
            if rtype not in (_POLYGON, _RECTANGLE, _ELLIPSE):
                skipped.append(("not an area", f"{path}: {where} has Type {rtype} (ruler, arrow, ...), skipped"))
                continue
            xy = _vertices(region.findall("Vertices/Vertex"), path, where)
            if rtype == _ELLIPSE and len(xy) >= 2:
                geom = _ellipse(xy)
            elif len(xy) >= 3:
                geom = Polygon(xy)
            else:
                skipped.append(("degenerate outline", f"{path}: {where} has {len(xy)} vertices, skipped"))
                continue
            name = (region.get("Text") or "").strip() or layer_name
            nuclei.append(Nucleus(where, geometry=geom, class_name=name))
    if not nuclei and not skipped:
        raise RawDataError(path, "holds no <Region> (no annotations)")
    return nuclei, skipped, mpp


def scan(inputs: Sequence[str], images: Optional[str] = None) -> List[SourceImage]:
    """One :class:`SourceImage` per XML file of ``inputs`` (files or folders of ``*.xml``)."""
    files = expand_inputs(inputs, SUFFIXES, "Aperio XML files")
    finder = ImageFinder(images, exclude=files)
    sources = []
    for path in files:
        nuclei, skipped, mpp = parse(path)
        stem = os.path.splitext(os.path.basename(path))[0]
        image = finder.find(stem, path)
        sources.append(SourceImage(
            stem, image, path, (lambda n=nuclei: (n, None)),
            mpp=mpp if mpp else None, mpp_from="MicronsPerPixel of the XML" if mpp else "", skipped=skipped,
        ))
    return sources
