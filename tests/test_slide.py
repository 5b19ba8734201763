# -*- coding: utf-8 -*-
"""
The whole-slide pipeline (d2_nucleus/slide, tools/segment_slides.py) on small synthetic slides.

The seam, ownership, stitching and resume tests use a stand-in for the model (a test double, defined
here): the slide's nuclei are painted in colours that encode their label, and the stand-in returns
exactly the nuclei it sees in a tile, cut at the tile's edge as a real model would see them. With a
perfect segmenter, the slide outputs must hold each nucleus exactly once, whole.
"""
import json
import os

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely.geometry
import torch
from detectron2.structures import Boxes, Instances

from d2_nucleus.config import get_nucleus_cfg
from d2_nucleus.data.synthetic import render_nuclei_image
from d2_nucleus.data.synthetic_slide import write_synthetic_slide
from d2_nucleus.data.slide_readers import SlideError, choose_level, open_slide
from d2_nucleus.slide import (
    TileGrid,
    batch_tiles,
    detect_tissue,
    read_tile,
    segment_slide,
    slide_geometry,
    slide_thumbnail,
)
from d2_nucleus.utils import rle as rle_util

from tools_cli import load_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(ROOT, "configs", "demo", "mask_rcnn_R_18_FPN_demo.yaml")
WHITE = 0xFFFFFF


# -------------------------------------------------------------------------------------------------
# Test data: nuclei painted with their label as colour, and a perfect stand-in segmenter
# -------------------------------------------------------------------------------------------------
def _labels_to_rgb(labels):
    ids = np.where(labels > 0, labels, WHITE).astype(np.uint32)
    return np.stack([(ids >> 16) & 255, (ids >> 8) & 255, ids & 255], axis=-1).astype(np.uint8)


def _rgb_to_labels(rgb):
    rgb = rgb.astype(np.uint32)
    ids = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    return np.where(ids == WHITE, 0, ids)


class LabelSegmenter:
    """Stand-in model: returns every labelled nucleus of a tile (as a perfect model would)."""

    input_format = "RGB"

    def __init__(self, fail_after=None):
        self.calls = 0
        self.fail_after = fail_after
        self.batches = []  # the (height, width) of each batch's images

    def __call__(self, images):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.batches.append([im.shape[:2] for im in images])
        outputs = []
        for image in images:
            labels = _rgb_to_labels(image)
            ids = [i for i in np.unique(labels) if i]
            h, w = labels.shape
            inst = Instances((h, w))
            inst.pred_rles = [rle_util.encode(labels == i) for i in ids]
            boxes = rle_util.to_bbox(inst.pred_rles) if ids else np.zeros((0, 4))
            boxes[:, 2:] += boxes[:, :2]
            inst.pred_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32))
            inst.scores = torch.full((len(ids),), 0.9)
            inst.pred_classes = torch.zeros(len(ids), dtype=torch.int64)
            outputs.append(inst)
        return outputs


def _label_slide(path, seed=0, size=(700, 900), offset=(40, 30), n=350):
    """A lossless Aperio slide with label-coloured nuclei on white; returns the level-0 label map."""
    rng = np.random.default_rng(seed)
    _, labels = render_nuclei_image(rng, size[0], size[1], n, min_diameter=10, max_diameter=40)
    full = np.zeros((size[0] + 2 * offset[1], size[1] + 2 * offset[0]), np.int32)
    full[offset[1] : offset[1] + size[0], offset[0] : offset[0] + size[1]] = labels
    write_synthetic_slide(path, full.shape[1], full.shape[0], [(_labels_to_rgb(full), 0, 0)],
                          compression="zlib", glass=(255, 255, 255))
    return full


def _cfg(*opts):
    return get_nucleus_cfg(DEMO_CONFIG, ["MODEL.DEVICE", "cpu", "TEST.LABEL_MAP_SCORE_THRESH", "0.5",
                                         "SLIDE.TILE_SIZE", "256", "SLIDE.OVERLAP", "48",
                                         "SLIDE.TISSUE.ENABLED", "False", *opts])


def _gt_boxes(labels):
    out = {}
    for i in np.unique(labels):
        if i:
            ys, xs = np.nonzero(labels == i)
            out[int(i)] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, len(xs))
    return out


def _table_boxes(path):
    t = pq.read_table(path).to_pydict()
    return sorted(zip(t["bbox_x0"], t["bbox_y0"], t["bbox_x1"], t["bbox_y1"], t["area_px"]))


@pytest.fixture(scope="module")
def label_slide(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("slides") / "labels.svs")
    return path, _label_slide(path)


# -------------------------------------------------------------------------------------------------
# Readers, levels, tissue
# -------------------------------------------------------------------------------------------------
def test_aperio_reader_mpp_and_regions(tmp_path):
    rng = np.random.default_rng(1)
    patch = rng.integers(0, 255, (300, 500, 3), dtype=np.uint8)
    path = str(tmp_path / "a.svs")
    dims = write_synthetic_slide(path, 2500, 2100, [(patch, 700, 900)], mpp=0.252, compression="zlib",
                                 min_level_side=100)
    with open_slide(path) as s:
        assert s.format == "aperio"
        assert s.mpp == pytest.approx((0.252, 0.252))
        assert s.dimensions == (2500, 2100) and len(s.level_dimensions) == len(dims) == 3
        np.testing.assert_array_equal(s.read_region(700, 900, 0, 500, 300), patch)
        # beyond the slide: white
        assert (s.read_region(2400, 2000, 0, 200, 200)[150:, 150:] == 255).all()
    with open_slide(path, mpp=0.5) as s:
        assert s.mpp == (0.5, 0.5)


def test_plain_image_needs_mpp_and_tiff_tags(tmp_path):
    import tifffile

    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    png = str(tmp_path / "x.png")
    cv2.imwrite(png, image[:, :, ::-1])
    with pytest.raises(SlideError, match=r"x\.png.*--mpp"):
        open_slide(png)
    with open_slide(png, mpp=0.25) as s:
        np.testing.assert_array_equal(s.read_region(10, 20, 0, 50, 40), image[20:60, 10:60])
    tif = str(tmp_path / "x.tif")  # stripped, uncompressed: memory-mapped, mpp from resolution tags
    tifffile.imwrite(tif, image, resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER", photometric="rgb")
    with open_slide(tif) as s:
        assert s.mpp == pytest.approx((0.5, 0.5))
        np.testing.assert_array_equal(s.read_region(-5, 0, 0, 20, 10)[:, 5:], image[:10, :15])
    bad = str(tmp_path / "bad.svs")
    with open(bad, "wb") as f:
        f.write(b"II*\x00garbage" * 10)
    with pytest.raises(SlideError, match="bad.svs"):
        open_slide(bad)


def test_choose_level_and_resampling(tmp_path):
    assert choose_level([0.25, 1.0, 4.0], 0.25) == 0
    assert choose_level([0.125, 0.25, 0.5], 0.25) == 1  # 80x slide: the 2x-down level
    assert choose_level([0.5, 2.0], 0.25) == 0  # 20x slide: level 0, upsampled
    assert choose_level([0.1, 0.4, 1.6], 0.25) == 0  # 0.4 is too coarse: read 0.1 and downsample
    image = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(image, (0, 0), 3)
    path = str(tmp_path / "fine.svs")
    write_synthetic_slide(path, 400, 400, [(image, 0, 0)], mpp=0.125, compression="zlib", min_level_side=1000)
    with open_slide(path) as s:
        g = slide_geometry(s, 0.25, 0.1)
        assert g.resample and g.scale == pytest.approx(2.0) and (g.width, g.height) == (200, 200)
        grid = TileGrid(g.width, g.height, 128, 16)
        tile = grid.tile(1, 1)
        got = read_tile(s, g, tile)
        x0, y0, x1, y1 = tile.region
        want = cv2.resize(image, (200, 200), interpolation=cv2.INTER_AREA)[y0:y1, x0:x1]
        assert got.shape == want.shape
        assert np.abs(got.astype(int) - want).mean() < 2.0


def test_batches_hold_tiles_of_one_size():
    """A batch is padded to its largest tile: edge tiles are never batched with larger ones."""
    grid = TileGrid(3000, 2000, 1024, 64)  # 4 x 3 tiles, the last column 152 px wide, the last row 112 px high
    tiles = list(grid)

    def size(t):
        return t.region[2] - t.region[0], t.region[3] - t.region[1]

    # every tile but the last column's / row's has the tile size (those at the left / top edge
    # grown on their other side), and holds its core with at least half the overlap around it
    assert [size(t) for t in tiles[:4]] == [(1024, 1024)] * 3 + [(152, 1024)]
    assert size(tiles[-1]) == (152, 112)
    for t in tiles:
        assert t.region[0] <= max(t.core[0] - 32, 0) and t.region[2] >= min(t.core[2] + 32, 3000)
        assert t.region[1] <= max(t.core[1] - 32, 0) and t.region[3] >= min(t.core[3] + 32, 2000)
    batches = batch_tiles(tiles, 2)
    assert [t for b in batches for t in b] == tiles  # every tile once, in order
    assert all(1 <= len(b) <= 2 and len(set(map(size, b))) == 1 for b in batches)
    assert [[t.col for t in b] for b in batches[:3]] == [[0, 1], [2], [3]]  # the 152 px edge tile alone
    assert len(batches) == 9 and batch_tiles(tiles, 1) == [[t] for t in tiles]
    assert batch_tiles([], 4) == []


def test_slide_cli_detector_threshold_is_the_kept_score():
    """Slide mode computes masks only for the nuclei it keeps (score >= its threshold)."""
    from d2_nucleus.slide.options import slide_cfg_from_args

    cli = load_tool("segment_slides")
    base = ["--config-file", DEMO_CONFIG, "--weights", "x.pth", "s.svs", "--out", "o", "--device", "cpu"]
    cfg = slide_cfg_from_args(cli.get_parser().parse_args(base + ["--opts", "TEST.LABEL_MAP_SCORE_THRESH", "0.3"]))
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == cfg.TEST.LABEL_MAP_SCORE_THRESH == pytest.approx(0.3)
    for value in ("0.7", "0.0"):
        cfg = slide_cfg_from_args(cli.get_parser().parse_args(base + ["--score-thresh", value]))
        assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == cfg.TEST.LABEL_MAP_SCORE_THRESH == pytest.approx(float(value))


def test_tissue_detection_skips_glass(tmp_path):
    rng = np.random.default_rng(0)
    tissue, _ = render_nuclei_image(rng, 1200, 1600, 300)
    path = str(tmp_path / "t.svs")
    write_synthetic_slide(path, 8000, 6000, [(tissue, 2000, 3000)], mpp=0.252, min_level_side=200)
    cfg = _cfg()
    with open_slide(path) as s:
        thumb, scale = slide_thumbnail(s, 8.0)
        mask = detect_tissue(thumb, scale * s.mpp[0])
        ys, xs = np.nonzero(mask)
        # the patch spans level-0 x 2000-3600, y 3000-4200
        assert xs.min() * scale == pytest.approx(2000, abs=3 * scale)
        assert (xs.max() + 1) * scale == pytest.approx(3600, abs=3 * scale)
        assert ys.min() * scale == pytest.approx(3000, abs=3 * scale)
        area_mm2 = mask.sum() * (scale * 0.252) ** 2 / 1e6
        assert area_mm2 == pytest.approx(1600 * 1200 * 0.252**2 / 1e6, rel=0.1)
        g = slide_geometry(s, 0.25)
        grid = TileGrid(g.width, g.height, 1024, 64)
        keep = grid.select(mask, scale, g)
        assert 0 < keep.sum() <= 9 and keep.size == 63
        # all tissue (a large crop): all of it is found, Otsu does not cut it in two
        full = detect_tissue(cv2.resize(tissue, (160, 120), interpolation=cv2.INTER_AREA), 10 * 0.252)
        assert full.mean() > 0.99
    blank = str(tmp_path / "blank.svs")
    write_synthetic_slide(blank, 3000, 3000, [], mpp=0.252)
    with pytest.raises(SlideError, match="blank.svs: no tissue"):
        segment_slide(LabelSegmenter(), _cfg("SLIDE.TISSUE.ENABLED", "True"), blank, str(tmp_path / "out"),
                      progress=False)
    assert not os.path.exists(tmp_path / "out" / "blank.geojson")
    assert not os.path.exists(tmp_path / "out" / ".blank.work")


# -------------------------------------------------------------------------------------------------
# Seams: every nucleus once and whole
# -------------------------------------------------------------------------------------------------
def test_seams_each_nucleus_once_and_whole(label_slide, tmp_path):
    path, labels = label_slide
    # the ownership rule alone (no seam tolerance): no duplicate to remove
    summary = segment_slide(LabelSegmenter(), _cfg("SLIDE.SEAM_TOLERANCE", "0"), path, str(tmp_path),
                            progress=False)
    gt = _gt_boxes(labels)
    # the test is meaningful: many nuclei cross the tile grid's seams
    stride = 256 - 48
    crossing = [b for b in gt.values() if b[0] // stride != (b[2] - 1) // stride or b[1] // stride != (b[3] - 1) // stride]
    assert len(crossing) > 50
    assert summary["nuclei"] == len(gt)
    assert summary["duplicates_removed"] == 0 and summary["nuclei_cut_at_tile_edges"] == 0
    assert _table_boxes(os.path.join(tmp_path, "labels.parquet")) == sorted(gt.values())
    with open(os.path.join(tmp_path, "labels.geojson")) as f:
        features = json.load(f)["features"]
    assert len(features) == len(gt)
    assert {f["properties"]["classification"]["name"] for f in features} == {"Nucleus"}
    assert len({f["id"] for f in features}) == len(features)
    # each polygon is its nucleus' pixels: valid, area == the table's area_px (issue 27)
    table = pq.read_table(os.path.join(tmp_path, "labels.parquet")).to_pydict()
    for feature, area in zip(features, table["area_px"]):
        polygon = shapely.geometry.shape(feature["geometry"])
        assert polygon.is_valid and polygon.area == area
    # the default tolerance keeps the same nuclei (nuclei on a seam are claimed twice, one copy dropped)
    summary = segment_slide(LabelSegmenter(), _cfg(), path, str(tmp_path / "default"), progress=False)
    assert summary["nuclei"] == len(gt) and summary["nuclei_cut_at_tile_edges"] == 0
    assert _table_boxes(os.path.join(tmp_path, "default", "labels.parquet")) == sorted(gt.values())


def test_duplicate_safety_net(label_slide, tmp_path):
    """A seam tolerance of 20 px makes neighbouring tiles claim the same nuclei: the check removes them."""
    path, labels = label_slide
    gt = _gt_boxes(labels)
    summary = segment_slide(LabelSegmenter(), _cfg("SLIDE.SEAM_TOLERANCE", "20", "SLIDE.OVERLAP", "96"), path, str(tmp_path / "a"),
                            progress=False)
    assert summary["duplicates_removed"] > 20
    assert summary["nuclei"] == len(gt)
    assert _table_boxes(str(tmp_path / "a" / "labels.parquet")) == sorted(gt.values())
    # without the check they would be there
    summary = segment_slide(LabelSegmenter(), _cfg("SLIDE.SEAM_TOLERANCE", "20", "SLIDE.OVERLAP", "96", "SLIDE.DUPLICATE_IOU", "1.0"),
                            path, str(tmp_path / "b"), progress=False)
    assert summary["nuclei"] > len(gt) + 20


def test_small_overlap_reports_cut_nuclei(label_slide, tmp_path):
    path, _ = label_slide
    summary = segment_slide(LabelSegmenter(), _cfg("SLIDE.OVERLAP", "8"), path, str(tmp_path), progress=False)
    assert summary["nuclei_cut_at_tile_edges"] > 0


# -------------------------------------------------------------------------------------------------
# Resume and outputs
# -------------------------------------------------------------------------------------------------
def test_resume_after_interruption_equals_uninterrupted_run(label_slide, tmp_path):
    path, _ = label_slide
    cfg = _cfg("SLIDE.BATCH_SIZE", "2", "SLIDE.CSV", "True")
    full = str(tmp_path / "full")
    uninterrupted = LabelSegmenter()
    segment_slide(uninterrupted, cfg, path, full, progress=False)
    # batches of up to 2 tiles of one size (edge tiles are smaller: never padded to a full tile)
    assert all(len(b) <= 2 and len(set(b)) == 1 for b in uninterrupted.batches)
    assert any(len(b) == 2 for b in uninterrupted.batches) and any(len(b) == 1 for b in uninterrupted.batches)
    out = str(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        segment_slide(LabelSegmenter(fail_after=3), cfg, path, out, progress=False)
    # nothing final, the done tiles recorded
    assert sorted(os.listdir(out)) == [".labels.work"]
    done_tiles = os.listdir(os.path.join(out, ".labels.work", "tiles"))
    n_done = sum(map(len, uninterrupted.batches[:3]))
    assert len(done_tiles) == n_done
    # the done records carry the measurements (on by default): a resumed run writes them back unchanged
    with open(os.path.join(out, ".labels.work", "tiles", sorted(done_tiles)[0])) as f:
        done = json.load(f)
    assert len(done["measurements"]["perimeter_px"]) == len(done["nuclei"]) > 0
    model = LabelSegmenter()
    summary = segment_slide(model, cfg, path, out, progress=False)
    # the resumed run forms the uninterrupted run's remaining batches
    assert summary["resumed_tiles"] == n_done and model.batches == uninterrupted.batches[3:]
    for name in ("labels.geojson", "labels.csv"):
        with open(os.path.join(full, name), "rb") as a, open(os.path.join(out, name), "rb") as b:
            assert a.read() == b.read(), name
    table = pq.read_table(os.path.join(out, "labels.parquet"))
    assert table.equals(pq.read_table(os.path.join(full, "labels.parquet")))
    assert {"perimeter_um", "solidity", "hematoxylin_od_mean"} <= set(table.column_names)
    with open(os.path.join(full, "labels.summary.json")) as a, open(os.path.join(out, "labels.summary.json")) as b:
        assert json.load(a)["measurements"] == json.load(b)["measurements"]
    assert sorted(os.listdir(out)) == ["labels.csv", "labels.geojson", "labels.measurements.png", "labels.overview.png", "labels.parquet",
                                       "labels.summary.json"]
    # complete: a rerun does nothing, and nothing is overwritten without asking
    assert segment_slide(LabelSegmenter(fail_after=0), cfg, path, out, progress=False)["status"] == "exists"


def test_existing_outputs_not_overwritten(label_slide, tmp_path):
    from d2_nucleus.utils.file_io import OutputExistsError

    path, _ = label_slide
    (tmp_path / "labels.geojson").write_text("mine")
    with pytest.raises(OutputExistsError, match="labels.geojson"):
        segment_slide(LabelSegmenter(), _cfg(), path, str(tmp_path), progress=False)
    assert (tmp_path / "labels.geojson").read_text() == "mine"
    segment_slide(LabelSegmenter(), _cfg(), path, str(tmp_path), overwrite=True, progress=False)
    assert (tmp_path / "labels.geojson").read_text() != "mine"


# -------------------------------------------------------------------------------------------------
# The CLI with the real model class (random weights)
# -------------------------------------------------------------------------------------------------
def test_cli_end_to_end_and_bad_slides(tmp_path, capsys):
    from detectron2.modeling import build_model

    import d2_nucleus.modeling  # noqa: F401  (registers NucleusRCNN: the test also runs alone)

    cfg = get_nucleus_cfg(DEMO_CONFIG, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    weights = str(tmp_path / "model.pth")
    torch.save({"model": build_model(cfg).state_dict()}, weights)

    rng = np.random.default_rng(0)
    tissue, _ = render_nuclei_image(rng, 400, 500, 80)
    slides = tmp_path / "slides"
    slides.mkdir()
    write_synthetic_slide(str(slides / "good.svs"), 700, 600, [(tissue, 100, 120)], mpp=0.252, min_level_side=100)
    (slides / "broken.svs").write_bytes(b"II*\x00" + b"\x00" * 100)
    cv2.imwrite(str(slides / "nompp.png"), tissue)
    out = tmp_path / "out"
    cli = load_tool("segment_slides")
    argv = ["--config-file", DEMO_CONFIG, "--weights", weights, str(slides), "--out", str(out), "--quiet",
            "--tile-size", "256", "--overlap", "32", "--csv", "--score-thresh", "0.0",
            "--opts", "MODEL.RPN.POST_NMS_TOPK_TEST", "100", "TEST.DETECTIONS_PER_IMAGE", "20"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "2 slide(s) failed" in err and "broken.svs" in err and "nompp.png" in err and "--mpp" in err
    assert sorted(os.listdir(out)) == ["good.csv", "good.geojson", "good.measurements.png", "good.overview.png", "good.parquet",
                                       "good.summary.json"]
    with open(out / "good.summary.json") as f:
        summary = json.load(f)
    assert summary["format"] == "aperio" and summary["mpp"] == [0.252, 0.252] and summary["level"] == 0
    assert 0 < summary["tiles_run"] < summary["tiles"] and summary["tissue_mm2"] > 0
    assert summary["weights_sha256"] and summary["config_sha256"]
    with open(out / "good.geojson") as f:
        features = json.load(f)["features"]
    assert len(features) == summary["nuclei"] > 0
    table = pq.read_table(out / "good.parquet")
    assert table.num_rows == summary["nuclei"]
    xs, ys = np.asarray(table["centroid_x"]), np.asarray(table["centroid_y"])
    assert ((xs >= 0) & (xs < 700) & (ys >= 0) & (ys < 600)).all()  # level-0 px of the slide
    for feature, area in zip(features, table["area_px"].to_pylist()):
        polygon = shapely.geometry.shape(feature["geometry"])
        assert polygon.is_valid and polygon.area == pytest.approx(area, abs=1)  # level 0 at 0.252 um/px: scaled
        assert feature["properties"]["measurements"]["Detection score"] >= 0.0
    assert cv2.imread(str(out / "good.overview.png")) is not None
    # the same command again: complete slides are not redone
    assert cli.main(argv[:-5] + ["--mpp", "0.252"] + argv[-5:]) == 1
    assert "already complete" in capsys.readouterr().out


def test_truncated_slide_fails_cleanly(tmp_path):
    rng = np.random.default_rng(0)
    tissue, _ = render_nuclei_image(rng, 600, 600, 100)
    path = str(tmp_path / "cut.svs")
    write_synthetic_slide(path, 1200, 1000, [(tissue, 300, 200)], mpp=0.252, min_level_side=100)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    out = tmp_path / "out"
    with pytest.raises(SlideError, match="cut.svs"):
        segment_slide(LabelSegmenter(), _cfg(), path, str(out), progress=False)
    assert not out.exists() or os.listdir(out) == []


def test_user_tissue_mask_and_list_slides(label_slide, tmp_path):
    from d2_nucleus.slide import list_slides

    path, labels = label_slide
    mask = np.zeros((76, 98), np.uint8)  # any size covering the slide: left half is "tissue"
    mask[:, :49] = 255
    mask_path = str(tmp_path / "mask.png")
    cv2.imwrite(mask_path, mask)
    full = segment_slide(LabelSegmenter(), _cfg(), path, str(tmp_path / "all"), progress=False)
    half = segment_slide(LabelSegmenter(), _cfg("SLIDE.TISSUE.MASK", mask_path), path, str(tmp_path / "half"),
                         progress=False)
    assert half["tissue"] == f"mask {mask_path}" and half["tiles_run"] < full["tiles_run"]
    assert half["tissue_mm2"] == pytest.approx(full["tissue_mm2"] / 2, rel=0.05)
    xs = np.asarray(pq.read_table(str(tmp_path / "half" / "labels.parquet"))["centroid_x"])
    assert 0 < len(xs) < full["nuclei"] and xs.max() < labels.shape[1] / 2 + 256
    # folders are expanded; clashing names are refused
    (tmp_path / "d").mkdir()
    for name in ("b.svs", "a.tif", "notes.txt", ".hidden.svs"):
        (tmp_path / "d" / name).write_bytes(b"x")
    assert [os.path.basename(p) for p in list_slides([str(tmp_path / "d")])] == ["a.tif", "b.svs"]
    with pytest.raises(ValueError, match="share file names"):
        list_slides([str(tmp_path / "d" / "b.svs"), str(tmp_path / "b.svs")])
