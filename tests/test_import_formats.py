# -*- coding: utf-8 -*-
"""Each importer on inputs shaped like the real thing, imported back to the same nuclei."""
import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import tifffile

from d2_nucleus.data.importing import import_annotations
from d2_nucleus.data.raw import RawDataError
from d2_nucleus.export.geojson import rles_to_geojson
from d2_nucleus.utils import rle as rle_util
from import_data import (imported_label_maps, match, outlines_of, qupath_feature, synthetic_image,
                         write_aperio_xml, write_image)


def _run(fmt, inputs, out, **kw):
    kw.setdefault("target_mpp", 0.25)
    kw.setdefault("tolerance", 0.1)  # the CLI's default: the config's SLIDE.MPP_TOLERANCE
    kw.setdefault("ratio", 0.0)
    return import_annotations(fmt, inputs, str(out), progress=False, **kw)


def _coco(out, split="all_train"):
    with open(os.path.join(out, "annotations", f"instance_{split}.json")) as f:
        return json.load(f)


def test_aperio_xml_imports_the_same_nuclei(tmp_path):
    src = tmp_path / "xml"
    src.mkdir()
    expected = {}
    for i in range(3):
        image, labels = synthetic_image(i, 160, 20)
        write_image(str(src / f"img{i}.png"), image)
        write_aperio_xml(str(src / f"img{i}.xml"), outlines_of(labels), mpp=0.2527,
                         texts=["tumor" if k % 2 else "" for k in range(labels.max())], layer="nuclei")
        expected[f"img{i}"] = labels
    report = _run("aperio-xml", [str(src)], tmp_path / "out", ratio=0.3)
    assert report.images == 3 and report.nuclei == sum(int(v.max()) for v in expected.values())
    for image_id, got in imported_label_maps(str(tmp_path / "out")).items():
        np.testing.assert_array_equal(got, expected[image_id])  # pixel-exact, same order
    anns = _coco(str(tmp_path / "out"))["annotations"]
    assert {a["class_name"] for a in anns} == {"tumor", "nuclei"}  # region text, else the layer name
    assert all(a["category_id"] == 1 for a in anns)
    source = json.load(open(tmp_path / "out" / "source.json"))
    rec = source["images"]["img0"]
    assert (rec["source_mpp"], rec["factor"], rec["mpp_from"]) == (0.2527, 1.0, "MicronsPerPixel of the XML")
    split = json.load(open(tmp_path / "out" / "split.json"))
    assert len(split["val"]) == 1 and len(split["train"]) == 2
    # images at factor 1 are the source PNGs themselves (hard links or copies)
    assert open(tmp_path / "out" / "nucleus_data" / "all_train" / "img0.png", "rb").read() == \
        open(src / "img0.png", "rb").read()


def test_aperio_region_types_and_safe_parsing(tmp_path):
    image, labels = synthetic_image(0, 96, 5)
    write_image(str(tmp_path / "a.png"), image)
    extra = ('<Region Id="90" Type="2" Text="ell"><Vertices><Vertex X="10" Y="10"/><Vertex X="30" Y="20"/></Vertices></Region>'
             '<Region Id="91" Type="4" Text="ruler"><Vertices><Vertex X="1" Y="1"/><Vertex X="50" Y="50"/></Vertices></Region>'
             '<Region Id="92" Type="0" NegativeROA="1"><Vertices><Vertex X="1" Y="1"/><Vertex X="9" Y="1"/><Vertex X="9" Y="9"/></Vertices></Region>'
             '<Region Id="93" Type="0"><Vertices><Vertex X="1" Y="1"/><Vertex X="9" Y="1"/></Vertices></Region>')
    write_aperio_xml(str(tmp_path / "a.xml"), outlines_of(labels), mpp=0.25, extra_regions=extra)
    report = _run("aperio-xml", [str(tmp_path / "a.xml")], tmp_path / "out")
    assert report.nuclei == int(labels.max()) + 1 - sum(report.skipped.get(k, 0) for k in ("covered",))
    assert set(report.skipped) >= {"not an area", "negative region", "degenerate outline"}
    ell = [a for a in _coco(str(tmp_path / "out"))["annotations"] if a["class_name"] == "ell"]
    assert len(ell) == 1 and abs(ell[0]["area"] - np.pi * 10 * 5) < 12  # ellipse in the 20 x 10 box

    # an external entity is never resolved: the file is refused, naming it, and nothing is read
    secret = tmp_path / "secret.txt"
    secret.write_text("42")
    evil = (f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file://{secret}">]>'
            '<Annotations MicronsPerPixel="0.25"><Annotation Name="&x;"><Regions><Region Id="1" Type="0"><Vertices>'
            '<Vertex X="10" Y="10"/><Vertex X="20" Y="10"/><Vertex X="20" Y="20"/></Vertices></Region></Regions>'
            '</Annotation></Annotations>')
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "b.xml").write_text(evil)
    write_image(str(tmp_path / "e" / "b.png"), image)
    with pytest.raises(RawDataError, match=r"b\.xml: not valid XML \(.*external entity"):
        _run("aperio-xml", [str(tmp_path / "e")], tmp_path / "out2")
    assert not os.path.exists(tmp_path / "out2")


def test_qupath_geojson_shapes(tmp_path):
    """FeatureCollection (QuPath 0.5/0.6), a bare list, holes, MultiPolygons, cells, points skipped."""
    from shapely.geometry import Point, box

    image, labels = synthetic_image(3, 128, 12)
    assert (labels[100:120, 100:120] == 0).all() and (labels[2:6, 2:6] == 0).all()  # room for two more
    geoms = outlines_of(labels)
    feats = [qupath_feature(g, i, "Tumor" if i % 2 else "Stroma", "detection" if i % 3 else "annotation")
             for i, g in enumerate(geoms)]
    feats.append(qupath_feature(box(100, 100, 120, 120).difference(box(105, 105, 110, 110)), 90, None))
    cell = qupath_feature(box(2, 2, 6, 6), 91, "Immune cells", "cell")
    cell["nucleusGeometry"] = {"type": "Polygon", "coordinates": [[[3, 3], [5, 3], [5, 5], [3, 5], [3, 3]]]}
    feats.append(cell)
    feats.append(qupath_feature(Point(5, 5), 92, "Tumor"))
    feats.append({"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0, 0], [9, 9]]},
                  "properties": {"objectType": "annotation"}})
    folder = tmp_path / "qp"
    folder.mkdir()
    write_image(str(folder / "slide1.tif"), image)
    (folder / "slide1.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    write_image(str(folder / "slide2.png"), image)
    (folder / "slide2.geojson").write_text(json.dumps(feats[:3]))  # QuPath's export without FeatureCollection
    report = _run("geojson", [str(folder)], tmp_path / "out", default_mpp=0.5, target_mpp=0.5)
    assert report.skipped["Point (not an area)"] == 1 and report.skipped["LineString (not an area)"] == 1
    got = imported_label_maps(str(tmp_path / "out"))
    for k in range(1, len(geoms) + 1):
        np.testing.assert_array_equal(got["slide1"] == k, labels == k)
    anns = [a for a in _coco(str(tmp_path / "out"))["annotations"] if a["image_id"] == 1]
    assert [a["class_name"] for a in anns[: len(geoms)]] == ["Tumor" if i % 2 else "Stroma" for i in range(len(geoms))]
    assert [a["area"] for a in anns if a["class_name"] is None] == [400 - 25]  # the hole stays a hole
    assert [a["area"] for a in anns if a["class_name"] == "Immune cells"] == [4]  # the nucleus, not the cell
    assert len(got["slide2"][got["slide2"] > 0]) == sum((labels == k).sum() for k in (1, 2, 3))


def test_own_geojson_round_trip(tmp_path):
    """tools/predict.py's GeoJSON (export/geojson.py) imports back to the nuclei it was made of."""
    image, labels = synthetic_image(2, 160, 25)
    rles = [rle_util.encode((labels == k).astype(np.uint8)) for k in range(1, labels.max() + 1)]
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    collection = rles_to_geojson(rles, scores=[0.9] * len(rles))
    (tmp_path / "pred").mkdir()
    write_image(str(tmp_path / "pred" / "img.png"), image)
    (tmp_path / "pred" / "img.geojson").write_text(json.dumps(collection))
    _run("geojson", [str(tmp_path / "pred")], tmp_path / "out", default_mpp=0.25)
    got = imported_label_maps(str(tmp_path / "out"))["img"]
    pairs = match(got, labels)
    assert len(pairs) == labels.max() == got.max()
    from shapely.geometry import shape

    if all(shape(f["geometry"]).area == (labels == k).sum() for k, f in enumerate(collection["features"], start=1)):
        np.testing.assert_array_equal(got, labels)  # outlines along pixel edges: exactly the same nuclei
    else:
        # the older export traces through boundary pixel centres; by the top-left rule those on the
        # right and bottom edges are lost (measured: mean IoU 0.89 on these 8-40 px ellipses)
        assert np.mean([iou for _, _, iou in pairs]) > 0.85
    assert all(a["class_name"] == "Nucleus" for a in _coco(str(tmp_path / "out"))["annotations"])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.float32])
def test_label_images_images_and_masks_folders(tmp_path, dtype):
    image, labels = synthetic_image(3, 128, 20)
    (tmp_path / "d" / "images").mkdir(parents=True)
    (tmp_path / "d" / "masks").mkdir()
    tifffile.imwrite(str(tmp_path / "d" / "images" / "X.tif"), image, resolution=(1e4 / 0.5, 1e4 / 0.5),
                     resolutionunit="CENTIMETER")
    values = labels.astype(dtype) * (1000 if dtype == np.uint32 else 1)  # sparse label values
    tifffile.imwrite(str(tmp_path / "d" / "masks" / "X.tif"), values)
    report = _run("label-image", [str(tmp_path / "d")], tmp_path / "out", target_mpp=0.5)
    got = imported_label_maps(str(tmp_path / "out"))["X"]
    np.testing.assert_array_equal(got, labels)  # factor 1: the mpp came from the image's TIFF tags
    rec = json.load(open(tmp_path / "out" / "source.json"))["images"]["X"]
    assert rec["mpp_from"] == "image metadata" and rec["source_mpp"] == pytest.approx(0.5)
    assert report.nuclei == labels.max()


def test_label_images_cellpose_pairs(tmp_path):
    image, labels = synthetic_image(4, 128, 20)
    write_image(str(tmp_path / "A.png"), image)
    cv2.imwrite(str(tmp_path / "A_masks.png"), labels.astype(np.uint16))
    write_image(str(tmp_path / "B.png"), image)
    cv2.imwrite(str(tmp_path / "B_masks.png"), labels.astype(np.uint8))
    _run("label-image", [str(tmp_path)], tmp_path.parent / (tmp_path.name + "_out"), default_mpp=0.25)
    got = imported_label_maps(str(tmp_path.parent / (tmp_path.name + "_out")))
    assert set(got) == {"A", "B"}
    for v in got.values():
        np.testing.assert_array_equal(v, labels)


def test_coco_written_with_pycocotools(tmp_path):
    """Polygons, compressed and uncompressed RLE, a crowd region, three categories."""
    image, labels = synthetic_image(5, 128, 18)
    write_image(str(tmp_path / "img.png"), image)
    geoms = outlines_of(labels)
    anns = []
    for k, g in enumerate(geoms, start=1):
        m = np.asfortranarray((labels == k).astype(np.uint8))
        kind = k % 3
        if kind == 0 and g.geom_type == "Polygon" and not g.interiors:
            seg = [np.asarray(g.exterior.coords)[:-1].ravel().tolist()]
        elif kind == 1:
            seg = mask_util.encode(m)
            seg["counts"] = seg["counts"].decode("ascii")
        else:  # uncompressed RLE, as CVAT writes it
            flat = m.ravel(order="F")
            change = np.flatnonzero(np.diff(flat)) + 1
            runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
            seg = {"size": list(m.shape), "counts": ([0] if flat[0] else []) + runs}
        anns.append({"id": k, "image_id": 7, "category_id": 1 + kind, "segmentation": seg, "iscrowd": 0,
                     "area": int(m.sum()), "bbox": [0, 0, 1, 1]})
    crowd = mask_util.encode(np.asfortranarray(np.ones((128, 128), np.uint8)))
    crowd["counts"] = crowd["counts"].decode("ascii")
    anns.append({"id": 99, "image_id": 7, "category_id": 1, "segmentation": crowd, "iscrowd": 1})
    coco = {"images": [{"id": 7, "file_name": "img.png", "width": 128, "height": 128}], "annotations": anns,
            "categories": [{"id": 1, "name": "epithelial"}, {"id": 2, "name": "lymphocyte"}, {"id": 3, "name": "other"}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    report = _run("coco", [str(tmp_path / "coco.json")], tmp_path / "out", default_mpp=0.25)
    assert report.skipped["crowd region"] == 1
    np.testing.assert_array_equal(imported_label_maps(str(tmp_path / "out"))["img"], labels)
    out = _coco(str(tmp_path / "out"))
    assert out["categories"] == [{"id": 1, "name": "nucleus", "supercategory": "nucleus"}]
    assert {a["class_name"] for a in out["annotations"]} == {"epithelial", "lymphocyte", "other"}


def test_coco_bad_inputs(tmp_path):
    image, _ = synthetic_image(5, 64, 4)
    write_image(str(tmp_path / "img.png"), image)
    base = {"images": [{"id": 1, "file_name": "img.png", "width": 64, "height": 64}],
            "categories": [{"id": 1, "name": "n"}]}
    bad = [
        ({**base, "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                                   "segmentation": {"size": [32, 32], "counts": "PPYo0"}}]}, "RLE size"),
        ({**base, "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "segmentation": [[1, 1, 5, 1, 5, 5]]}]},
         "image_id 2"),
        ({**base, "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "segmentation": [[1, 1, 5, 1, 5, 5]]}]},
         "category_id 5"),
        ({"images": [{"id": 1, "file_name": "../x/img.png", "width": 64, "height": 64}], "annotations": []},
         "leaves the image folder"),
        ({"annotations": []}, "no 'images'"),
    ]
    for i, (coco, msg) in enumerate(bad):
        path = tmp_path / f"bad{i}.json"
        path.write_text(json.dumps(coco))
        with pytest.raises(RawDataError, match=msg):
            _run("coco", [str(path)], tmp_path / f"out{i}", default_mpp=0.25)
        assert not os.path.exists(tmp_path / f"out{i}")
