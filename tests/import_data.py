# -*- coding: utf-8 -*-
"""
Inputs shaped like the real thing for the importer tests: synthetic H&E images with their nuclei
as label maps, outlines traced along pixel edges (test-local tracer: the union of each row run's
unit squares, so outline area == pixel count), and writers of Aperio XML / QuPath GeoJSON / COCO
as those tools write them. Plus the reader of an imported layout back into label maps.
"""
import json
import os
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from d2_nucleus.data.synthetic import render_nuclei_image
from d2_nucleus.utils.label_map import annotations_to_label_map


def synthetic_image(seed: int = 0, size: int = 160, nuclei: int = 25):
    """(RGB image, label map int32 with labels 1..n)."""
    return render_nuclei_image(np.random.default_rng(seed), size, size, nuclei)


def trace_pixel_edges(mask: np.ndarray, x0: float = 0, y0: float = 0):
    """The outline of a binary mask along its pixels' edges (a shapely Polygon / MultiPolygon)."""
    from shapely.geometry import box
    from shapely.ops import unary_union

    boxes = []
    for y in range(mask.shape[0]):
        row = np.concatenate([[0], mask[y].astype(np.int8), [0]])
        d = np.diff(row)
        for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)):
            boxes.append(box(x0 + a, y0 + y, x0 + b, y0 + y + 1))
    return unary_union(boxes)


def outlines_of(labels: np.ndarray) -> List:
    """Pixel-edge outline of every label 1..max, in label order."""
    out = []
    for k in range(1, int(labels.max()) + 1):
        ys, xs = np.nonzero(labels == k)
        y0, x0 = ys.min(), xs.min()
        out.append(trace_pixel_edges(labels[y0 : ys.max() + 1, x0 : xs.max() + 1] == k, x0, y0))
    return out


def _rings(geom):
    polys = [geom] if geom.geom_type == "Polygon" else list(geom.geoms)
    return polys


def write_aperio_xml(path: str, geoms, mpp: Optional[float] = 0.2527, texts: Optional[Sequence[str]] = None,
                     layer: str = "", extra_regions: str = "") -> None:
    """ImageScope XML as MoNuSeg's files look: one <Annotation> layer, a <Region> a nucleus (exterior ring)."""
    head = f'<Annotations MicronsPerPixel="{mpp:.6f}">' if mpp else "<Annotations>"
    regions = []
    for i, g in enumerate(geoms):
        ring = np.asarray(_rings(g)[0].exterior.coords)[:-1]
        verts = "".join(f'<Vertex X="{x:.6f}" Y="{y:.6f}"/>' for x, y in ring)
        text = texts[i] if texts else ""
        regions.append(f'<Region Id="{i + 1}" Type="0" Zoom="5" Text="{text}" NegativeROA="0" Analyze="1">'
                       f"<Attributes/><Vertices>{verts}</Vertices></Region>")
    xml = (f'{head}\n<Annotation Id="1" Name="{layer}" Type="4" LineColor="65280" Visible="1">'
           '<Attributes><Attribute Name="Description" Id="0" Value=""/></Attributes><Regions>'
           '<RegionAttributeHeaders><AttributeHeader Id="9999" Name="Region" ColumnWidth="-1"/></RegionAttributeHeaders>'
           + "".join(regions) + extra_regions + "</Regions><Plots/></Annotation>\n</Annotations>\n")
    with open(path, "w") as f:
        f.write(xml)


def qupath_feature(geom, i: int, name: Optional[str] = "Nucleus", object_type: str = "annotation") -> Dict:
    """One Feature as QuPath 0.5/0.6 exports it."""
    from shapely.geometry import mapping

    props = {"objectType": object_type, "isLocked": False}
    if name is not None:
        props["classification"] = {"name": name, "color": [200, 0, 0]}
    geometry = json.loads(json.dumps(mapping(geom)))  # tuples -> lists
    return {"type": "Feature", "id": f"00000000-0000-0000-0000-{i:012d}", "geometry": geometry, "properties": props}


def write_image(path: str, rgb: np.ndarray) -> None:
    assert cv2.imwrite(path, rgb[:, :, ::-1].copy()), path


def imported_label_maps(prepared: str, split: str = "all_train") -> Dict[str, np.ndarray]:
    """Image id -> label map (annotation order, 1-based) of an imported layout."""
    with open(os.path.join(prepared, "annotations", f"instance_{split}.json")) as f:
        coco = json.load(f)
    out = {}
    for im in coco["images"]:
        anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        out[im["file_name"][:-4]] = (
            annotations_to_label_map(anns, im["height"], im["width"]) if anns
            else np.zeros((im["height"], im["width"]), np.int32))
    return out


def match(a: np.ndarray, b: np.ndarray):
    """One-to-one matching (IoU > 0.5) of the instances of two label maps: [(label a, label b, IoU)]."""
    la, lb = int(a.max()), int(b.max())
    if not la or not lb:
        return []
    inter = np.zeros((la + 1, lb + 1))
    np.add.at(inter, (a.ravel(), b.ravel()), 1)
    area_a, area_b = inter.sum(axis=1), inter.sum(axis=0)
    iou = inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1)
    iou = iou[1:, 1:]
    r, c = linear_sum_assignment(-iou)
    return [(i + 1, j + 1, iou[i, j]) for i, j in zip(r, c) if iou[i, j] > 0.5]


def areas(labels: np.ndarray) -> np.ndarray:
    return np.bincount(labels.ravel())
