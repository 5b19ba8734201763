# -*- coding: utf-8 -*-
"""Point-annotation readers of nucleus types: CRCHisto (both layouts), QuPath GeoJSON points, CSV."""
import json
import os

import numpy as np
import pytest
import scipy.io
from PIL import Image

from d2_nucleus.types.crchisto import CRCHISTO_CLASSES, CRCHISTO_MPP, CRCHISTO_OFFSET, read_crchisto
from d2_nucleus.types.points import BadPointsError, read_points, read_points_csv, read_qupath_points

SHARED_ENV = "D2_NUCLEUS_SHARED_DATA"


def _image(path, width=60, height=50):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 200, np.uint8)).save(path)


def _mat(path, points):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    scipy.io.savemat(path, {"detection": np.asarray(points, np.float64).reshape(-1, 2)})


# CRCHisto coordinates (1-based) of one image: 4 nuclei, 3 with a class; the inflammatory point
# is 2 px away from its detection point, the "others" point has none (added as a nucleus).
DETECTION = [[10, 10], [20, 30], [40, 12], [55, 45]]
CLASSES = {"epithelial": [[10, 10]], "inflammatory": [[22, 30]], "others": [[5, 40]]}


def _crchisto_folder(root, name="img1", detection=DETECTION, classes=CLASSES):
    _image(os.path.join(root, name, f"{name}.bmp"))
    _mat(os.path.join(root, name, f"{name}_detection.mat"), detection)
    for cls, pts in classes.items():
        _mat(os.path.join(root, name, f"{name}_{cls}.mat"), pts)


def _check_img1(ann):
    assert ann.name == "img1" and ann.class_names == CRCHISTO_CLASSES and ann.mpp == CRCHISTO_MPP
    expected = np.array(DETECTION + [[5, 40]], np.float64) - CRCHISTO_OFFSET
    np.testing.assert_allclose(ann.xy, expected)
    assert ann.labels.tolist() == [0, 2, -1, -1, 3]
    assert ann.merge == {"snapped": 1, "added": 1}


def test_crchisto_one_folder_per_image(tmp_path):
    _crchisto_folder(tmp_path)
    (ann,) = read_crchisto(str(tmp_path))
    _check_img1(ann)
    assert ann.image.endswith("img1.bmp")


def test_crchisto_official_layout(tmp_path):
    _image(str(tmp_path / "Detection" / "img1" / "img1.bmp"))
    _mat(str(tmp_path / "Detection" / "img1" / "img1_detection.mat"), DETECTION)
    _image(str(tmp_path / "Classification" / "img1" / "img1.bmp"))
    for cls, pts in CLASSES.items():
        _mat(str(tmp_path / "Classification" / "img1" / f"img1_{cls}.mat"), pts)
    # an image with classes only: every point has a class
    _image(str(tmp_path / "Classification" / "img2" / "img2.bmp"))
    _mat(str(tmp_path / "Classification" / "img2" / "img2_fibroblast.mat"), [[3, 4], [8, 9]])
    first, second = read_points("crchisto", str(tmp_path), mpp=0.5)
    assert first.mpp == 0.5
    first.mpp = CRCHISTO_MPP
    _check_img1(first)
    assert second.labels.tolist() == [1, 1] and second.merge == {"snapped": 0, "added": 2}


def test_crchisto_bad_input(tmp_path):
    # a point outside the 60 x 50 image: one line naming the file
    _crchisto_folder(tmp_path / "a", classes={"fibroblast": [[10, 10], [61.6, 10]]})
    with pytest.raises(BadPointsError, match=r"img1_fibroblast\.mat: point 1 at x=60.6.*outside the 60x50 image"):
        read_crchisto(str(tmp_path / "a"))
    # an image without points
    _crchisto_folder(tmp_path / "b", detection=np.zeros((0, 2)), classes={})
    with pytest.raises(BadPointsError, match="no points for image img1.bmp"):
        read_crchisto(str(tmp_path / "b"))
    # not K x 2
    _crchisto_folder(tmp_path / "c")
    _mat(str(tmp_path / "c" / "img1" / "img1_detection.mat"), np.zeros((3, 2)))
    scipy.io.savemat(str(tmp_path / "c" / "img1" / "img1_detection.mat"), {"detection": np.zeros((3, 3))})
    with pytest.raises(BadPointsError, match=r"img1_detection\.mat: expected a K x 2 array"):
        read_crchisto(str(tmp_path / "c"))
    # not a MATLAB file, no image, no folder
    (tmp_path / "c" / "img1" / "img1_detection.mat").write_bytes(b"garbage")
    with pytest.raises(BadPointsError, match=r"img1_detection\.mat: not a readable MATLAB file"):
        read_crchisto(str(tmp_path / "c"))
    _mat(str(tmp_path / "d" / "img3" / "img3_detection.mat"), [[1, 1]])
    with pytest.raises(BadPointsError, match="no image img3.bmp"):
        read_crchisto(str(tmp_path / "d"))
    with pytest.raises(BadPointsError, match="not a folder"):
        read_crchisto(str(tmp_path / "missing"))


def _qupath_feature(kind, coords, name=None):
    props = {"objectType": "annotation", "isLocked": False}
    if name:
        props["classification"] = {"name": name, "color": [200, 0, 0]}
    return {"type": "Feature", "id": "x", "geometry": {"type": kind, "coordinates": coords}, "properties": props}


def test_qupath_points(tmp_path):
    images, points = tmp_path / "images", tmp_path / "points"
    _image(str(images / "a.png"))
    _image(str(images / "b.tif"))
    points.mkdir()
    collection = {"type": "FeatureCollection", "features": [
        _qupath_feature("MultiPoint", [[10.5, 20.5], [30.5, 5.5]], "Tumor"),
        _qupath_feature("Point", [1.0, 2.0], "Immune cells"),
        _qupath_feature("Point", [3.5, 3.5]),  # no class
        _qupath_feature("Polygon", [[[0, 0], [5, 0], [5, 5], [0, 0]]], "Tumor"),  # a region: ignored
    ]}  # fmt: skip
    (points / "a.geojson").write_text(json.dumps(collection))
    (points / "b.geojson").write_text(json.dumps([_qupath_feature("Point", [59.9, 49.9], "Stroma")]))  # QuPath 0.2
    a, b = read_qupath_points(str(points), str(images), mpp=0.25)
    assert a.class_names == ("Immune cells", "Stroma", "Tumor") and a.mpp == 0.25
    np.testing.assert_allclose(a.xy, [[10, 20], [30, 5], [0.5, 1.5], [3, 3]])  # pixel indices
    assert a.labels.tolist() == [2, 2, 0, -1] and b.labels.tolist() == [1]
    # the classes given: their order; an unknown name is an error naming the file
    a, _ = read_qupath_points(str(points), str(images), classes=["Tumor", "Stroma", "Immune cells"])
    assert a.labels.tolist() == [0, 0, 2, -1]
    with pytest.raises(BadPointsError, match=r"a\.geojson: unknown class name\(s\) \['Tumor'\]"):
        read_qupath_points(str(points), str(images), classes=["Stroma", "Immune cells"])


def test_qupath_bad_input(tmp_path):
    images, points = tmp_path / "images", tmp_path / "points"
    _image(str(images / "a.png"))
    points.mkdir()
    (points / "a.geojson").write_text(json.dumps([_qupath_feature("Point", [60.6, 10], "T")]))
    with pytest.raises(BadPointsError, match=r"a\.geojson: point 0 at x=60.1.*outside"):
        read_qupath_points(str(points), str(images))
    (points / "a.geojson").write_text("{not json")
    with pytest.raises(BadPointsError, match=r"a\.geojson: not valid JSON"):
        read_qupath_points(str(points), str(images))
    (points / "a.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(BadPointsError, match="no point has a class name"):
        read_qupath_points(str(points), str(images))
    with pytest.raises(BadPointsError, match=r"a\.geojson: no points for image a\.png"):
        read_qupath_points(str(points), str(images), classes=["T"])
    (points / "z.geojson").write_text(json.dumps([_qupath_feature("Point", [1, 1], "T")]))
    with pytest.raises(BadPointsError, match=r"z\.geojson: its image z\.\* .* is missing under"):
        read_qupath_points(str(points), str(images))


def test_points_csv(tmp_path):
    images = tmp_path / "images"
    _image(str(images / "a.png"))
    _image(str(images / "b.png"))
    path = tmp_path / "points.csv"
    path.write_text("image,x,y,class,comment\na.png,1,2,lymphocyte,\nb,3.5,4,,hm\na.png,59.5,49.5,tumour,\n")
    a, b = read_points_csv(str(path), str(images), mpp=0.5)
    assert a.class_names == ("lymphocyte", "tumour")
    np.testing.assert_allclose(a.xy, [[1, 2], [59.5, 49.5]])
    assert a.labels.tolist() == [0, 1] and b.labels.tolist() == [-1] and b.mpp == 0.5
    for text, match in [
        ("image,x,y\na.png,1,2\n", r"missing column\(s\) \['class'\]"),
        ("image,x,y,class\nc.png,1,2,t\n", r"line 2: its image c\.\* .* is missing"),
        ("image,x,y,class\na.png,one,2,t\n", "line 2: x and y must be numbers"),
        ("image,x,y,class\na.png,1,-2,t\n", "outside the 60x50 image"),
        ("image,x,y,class\na.png,1,2,other\n", r"unknown class name\(s\) \['other'\]"),
    ]:
        path.write_text(text)
        with pytest.raises(BadPointsError, match=match) as e:
            read_points_csv(str(path), str(images), classes=["t"])
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(BadPointsError, match="mpp is -1 um/px, outside the plausible"):
        read_points_csv(str(path), str(images), mpp=-1)
    with pytest.raises(BadPointsError, match="need the folder of their images"):
        read_points("csv", str(path))


@pytest.fixture(scope="module")
def crchisto():
    path = os.environ.get(SHARED_ENV)
    if not path:
        pytest.skip(f"${SHARED_ENV} is not set")
    return os.path.join(path, "crchisto")


def test_crchisto_real_counts(crchisto):
    sets = read_crchisto(crchisto)
    assert len(sets) == 80
    merged = {"snapped": sum(s.merge["snapped"] for s in sets), "added": sum(s.merge["added"] for s in sets)}
    points = sum(len(s) for s in sets)
    assert points - merged["added"] == 23254  # every detection point
    labels = np.concatenate([s.labels for s in sets])
    counts = {name: int((labels == k).sum()) for k, name in enumerate(CRCHISTO_CLASSES)}
    assert counts == {"epithelial": 6229, "fibroblast": 4536, "inflammatory": 5199, "others": 1837}
    assert (labels >= 0).sum() == 17801
    assert merged == {"snapped": 46, "added": 3}  # within 6 px of a detection point, or not


def test_points_on_the_edge_are_kept(tmp_path):
    images = tmp_path / "images"
    _image(str(images / "a.png"))
    path = tmp_path / "points.csv"
    path.write_text("image,x,y,class\na.png,-0.9,49.9,t\na.png,59.6,-0.5,t\n")
    (a,) = read_points_csv(str(path), str(images))
    np.testing.assert_allclose(a.xy, [[-0.5, 49.5], [59.5, -0.5]])
