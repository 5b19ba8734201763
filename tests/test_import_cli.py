# -*- coding: utf-8 -*-
"""tools/import_annotations.py: resolution rules, slides, bad input (one line, exit 2, nothing written)."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tifffile
from shapely import affinity

from d2_nucleus.data.synthetic_slide import write_synthetic_slide
from import_data import (areas, imported_label_maps, match, outlines_of, qupath_feature, synthetic_image,
                         write_aperio_xml, write_image)
from tools_cli import ROOT, load_tool

cli = load_tool("import_annotations")


def _main(capsys, *argv):
    rc = cli.main([str(a) for a in argv] + ["--quiet"])
    out, err = capsys.readouterr()
    return rc, out, err


def test_help_lists_every_format():
    text = cli.build_parser().format_help()
    for fmt in ("aperio-xml", "geojson", "label-image", "coco"):
        assert fmt in text


def _xml_pair(folder, name, scale, mpp, seed=0, size=256, nuclei=40):
    """A '40x' image with pixel-edge outlines, or its copy downsampled by 1/scale with outlines scaled."""
    image, labels = synthetic_image(seed, size, nuclei)
    geoms = outlines_of(labels)
    if scale != 1:
        image = cv2.resize(image, (round(size * scale),) * 2, interpolation=cv2.INTER_AREA)
        geoms = [affinity.scale(g, scale, scale, origin=(0, 0)) for g in geoms]
    os.makedirs(folder, exist_ok=True)
    write_image(os.path.join(folder, name + ".png"), image)
    write_aperio_xml(os.path.join(folder, name + ".xml"), geoms, mpp=mpp)
    return labels


def test_40x_and_its_20x_copy_give_the_same_nuclei_at_half_resolution(tmp_path, capsys):
    _xml_pair(tmp_path / "x40", "s", 1, 0.25)
    _xml_pair(tmp_path / "x20", "s", 0.5, 0.5)
    for mag in ("x40", "x20"):
        rc, out, err = _main(capsys, "--format", "aperio-xml", tmp_path / mag, "--out", tmp_path / f"p{mag}",
                             "--target-mpp", 0.5, "--ratio", 0)
        assert rc == 0, err
    a = imported_label_maps(str(tmp_path / "px40"))["s"]
    b = imported_label_maps(str(tmp_path / "px20"))["s"]
    assert a.shape == b.shape == (128, 128)
    np.testing.assert_array_equal(a, b)  # the same outlines on the same grid
    rec = json.load(open(tmp_path / "px40" / "source.json"))["images"]["s"]
    assert rec["factor"] == 0.5 and rec["source_mpp"] == 0.25 and rec["size"] == [128, 128]
    img40 = cv2.imread(str(tmp_path / "px40" / "nucleus_data" / "all_train" / "s.png"))
    img20 = cv2.imread(str(tmp_path / "px20" / "nucleus_data" / "all_train" / "s.png"))
    assert np.abs(img40.astype(int) - img20).max() <= 1


def test_label_image_40x_and_20x_copy_match_within_5_percent(tmp_path, capsys):
    """A 40x label image resampled at import vs the 20x copy a user would make (nearest neighbour)."""
    image, labels = synthetic_image(7, 512, 60)
    for mag, scale in (("x40", 1.0), ("x20", 0.5)):
        d = tmp_path / mag
        (d / "images").mkdir(parents=True)
        (d / "masks").mkdir()
        n = round(512 * scale)
        img = cv2.resize(image, (n, n), interpolation=cv2.INTER_AREA) if scale != 1 else image
        lab = cv2.resize(labels.astype(np.float32), (n, n), interpolation=cv2.INTER_NEAREST).astype(np.uint16)
        tifffile.imwrite(str(d / "images" / "t.tif"), img)
        tifffile.imwrite(str(d / "masks" / "t.tif"), lab)
        rc, out, err = _main(capsys, "--format", "label-image", d, "--out", tmp_path / f"p{mag}",
                             "--default-mpp", 0.25 / scale, "--target-mpp", 0.5, "--ratio", 0)
        assert rc == 0, err
    a = imported_label_maps(str(tmp_path / "px40"))["t"]
    b = imported_label_maps(str(tmp_path / "px20"))["t"]
    pairs = match(a, b)
    assert len(pairs) == a.max() == b.max() == labels.max()
    area_a, area_b = areas(a), areas(b)
    ratio = np.array([area_a[i] / area_b[j] for i, j, _ in pairs])
    # measured: total 0.995, median |difference| 1.6%, every nucleus of 50+ px within 3.9% (the
    # smallest, 12 px at 20x, within 17%: one boundary pixel is 8%)
    assert area_a[1:].sum() / area_b[1:].sum() == pytest.approx(1, abs=0.05)
    assert np.median(np.abs(ratio - 1)) < 0.05
    big = np.array([area_b[j] >= 50 for _, j, _ in pairs])
    assert np.abs(ratio[big] - 1).max() < 0.05


def test_slide_region_around_the_annotations(tmp_path, capsys):
    image, labels = synthetic_image(8, 128, 15)
    slide = tmp_path / "slides"
    slide.mkdir()
    write_synthetic_slide(str(slide / "case.svs"), 1200, 900, [(image, 700, 500)], mpp=0.5, compression="zlib")
    geoms = [affinity.translate(g, 700, 500) for g in outlines_of(labels)]
    # QuPath names its export after the image file: case.svs.geojson -> case.svs, image id "case"
    (slide / "case.svs.geojson").write_text(json.dumps({"type": "FeatureCollection",
                                                    "features": [qupath_feature(g, i) for i, g in enumerate(geoms)]}))
    rc, out, err = _main(capsys, "--format", "geojson", slide, "--out", tmp_path / "p", "--target-mpp", 0.5,
                         "--ratio", 0)
    assert rc == 0, err
    rec = json.load(open(tmp_path / "p" / "source.json"))["images"]["case"]
    assert rec["mpp_from"] == "image metadata" and rec["source_mpp"] == pytest.approx(0.5)
    x, y, w, h = rec["region"]
    ys, xs = np.nonzero(labels)
    assert (x, y) == (700 + xs.min() - 32, 500 + ys.min() - 32)  # the nuclei's box plus 32 px
    got = imported_label_maps(str(tmp_path / "p"))["case"]
    np.testing.assert_array_equal(got[32:-32, 32:-32], labels[ys.min():ys.max() + 1, xs.min():xs.max() + 1])
    pixels = cv2.imread(str(tmp_path / "p" / "nucleus_data" / "all_train" / "case.png"))[:, :, ::-1]
    np.testing.assert_array_equal(pixels[32:-32, 32:-32], image[ys.min():ys.max() + 1, xs.min():xs.max() + 1])


def _bad_cases(tmp_path):
    """(name, argv, expected message part, offending file) for each kind of bad input."""
    image, labels = synthetic_image(9, 96, 6)
    geoms = outlines_of(labels)
    cases = []

    def case(name, fmt, files, msg, offending, extra=()):
        d = tmp_path / name
        d.mkdir()
        for fname, content in files.items():
            if isinstance(content, np.ndarray):
                write_image(str(d / fname), content) if content.ndim == 3 else cv2.imwrite(str(d / fname), content)
            else:
                (d / fname).write_text(content)
        cases.append((name, ["--format", fmt, str(d), "--ratio", "0", *extra], msg, str(d / offending)))

    d = tmp_path / "xml_src"
    d.mkdir()
    write_aperio_xml(str(d / "a.xml"), geoms)
    good_xml = (d / "a.xml").read_text()
    case("missing_image", "aperio-xml", {"a.xml": good_xml}, "its image a.* .* is missing", "a.xml")
    case("empty_xml", "aperio-xml", {"a.xml": "", "a.png": image}, "empty file", "a.xml")
    case("malformed_xml", "aperio-xml", {"a.xml": good_xml[:200], "a.png": image}, "not valid XML", "a.xml")
    write_aperio_xml(str(d / "far.xml"), [affinity.translate(g, 5000, 0) for g in geoms])
    case("outside", "aperio-xml", {"a.xml": (d / "far.xml").read_text(), "a.png": image},
         r"Region 1 lies outside its image .* \(96x96 px\)", "a.xml")
    case("malformed_geojson", "geojson", {"a.geojson": '{"type": "FeatureCollection", "features": [', "a.png": image},
         "not valid JSON", "a.geojson", ["--default-mpp", "0.25"])
    case("no_mpp", "geojson", {"a.geojson": json.dumps([qupath_feature(g, 0) for g in geoms]), "a.png": image},
         "no resolution known", "a.geojson")
    case("label_size", "label-image", {"a.png": image, "a_masks.png": labels[:80].astype(np.uint16)},
         "annotations are 96x80 px but the image .* is 96x96", "a_masks.png", ["--default-mpp", "0.25"])
    case("rgb_labels", "label-image", {"a.png": image, "a_masks.png": image}, "one channel", "a_masks.png",
         ["--default-mpp", "0.25"])
    return cases


def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys):
    for name, argv, msg, offending in _bad_cases(tmp_path):
        out = tmp_path / f"out_{name}"
        rc, stdout, err = _main(capsys, *argv, "--out", out)
        assert rc == 2, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"import_annotations: error: {offending}: "), (name, err)
        import re

        assert re.search(msg, lines[0]), (name, lines[0])
        assert not os.path.exists(out) and not [n for n in os.listdir(tmp_path) if ".d2tmp-" in n], name


def test_outputs_never_replace_inputs_or_unrelated_folders(tmp_path, capsys):
    d = tmp_path / "src"
    _xml_pair(d, "a", 1, 0.25, size=96, nuclei=5)
    rc, _, err = _main(capsys, "--format", "aperio-xml", d, "--out", d / "prepared")
    assert rc == 2 and "would be inside the input" in err
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    rc, _, err = _main(capsys, "--format", "aperio-xml", d, "--out", other)
    assert rc == 2 and "already exists" in err
    rc, _, err = _main(capsys, "--format", "aperio-xml", d, "--out", other, "--overwrite")
    assert rc == 2 and "holds other files" in err and (other / "notes.txt").read_text() == "keep me"
    assert _main(capsys, "--format", "aperio-xml", d, "--out", tmp_path / "p", "--ratio", 0)[0] == 0
    assert _main(capsys, "--format", "aperio-xml", d, "--out", tmp_path / "p", "--ratio", 0, "--overwrite")[0] == 0


def test_class_filter_and_config_resolution(tmp_path, capsys):
    image, labels = synthetic_image(10, 128, 12)
    d = tmp_path / "qp"
    d.mkdir()
    write_image(str(d / "a.png"), image)
    feats = [qupath_feature(g, i, "Tumor" if i < 4 else "Region") for i, g in enumerate(outlines_of(labels))]
    (d / "a.geojson").write_text(json.dumps(feats))
    cfg = tmp_path / "half.yaml"
    cfg.write_text("_BASE_: " + os.path.join(ROOT, "configs", "cpu", "mask_rcnn_R_18_FPN_cpu_gn.yaml")
                   + "\nMODEL:\n  PIXEL_SIZE_UM: 0.5\n")
    rc, out, err = _main(capsys, "--format", "geojson", d, "--out", tmp_path / "p", "--default-mpp", 0.25,
                         "--config-file", cfg, "--class", "Tumor", "--ratio", 0)
    assert rc == 0, err
    source = json.load(open(tmp_path / "p" / "source.json"))
    assert source["target_mpp"] == 0.5 and source["classes"] == {"Tumor": 4}
    assert source["images"]["a"]["size"] == [64, 64]
    assert "class not chosen (--class): 8" in out and "'Region': 8" in out


def test_cli_process_exit_status(tmp_path):
    """As a user runs it: a real process, exit status 2 and one line on stderr."""
    d = tmp_path / "src"
    d.mkdir()
    (d / "a.xml").write_text("<Annotations><Annotation><Regions></Regions></Annotation></Annotations>")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "import_annotations.py"), "--format",
                        "aperio-xml", str(d), "--out", str(tmp_path / "p")],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 2
    assert r.stderr.strip() == f"import_annotations: error: {d / 'a.xml'}: holds no <Region> (no annotations)"
