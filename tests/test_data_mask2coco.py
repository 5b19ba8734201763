"""d2_nucleus.data.mask2coco: exact RLE, seed-parity polygons, per-image checks, parallel conversion."""
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest

from d2_nucleus.data.mask2coco import convert_image, encode_rle, mask_to_polygons, masks_to_coco
from d2_nucleus.data.mask_io import BinaryMask
from d2_nucleus.data.raw import RawDataError, RawTrainImage, scan_train


def _exact_rle(m):
    rle = mask_util.encode(np.asfortranarray((m > 0).astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def test_encode_rle_equals_pycocotools():
    rng = np.random.default_rng(0)
    shapes = [(1, 1), (1, 7), (7, 1), (5, 6), (33, 17), (64, 64)]
    for h, w in shapes:
        for _ in range(30):
            m = (rng.random((h, w)) < rng.uniform(0.05, 0.95)).astype(np.uint8)
            if rng.random() < 0.5:  # a compact blob instead of noise
                m[:] = 0
                y0, x0 = rng.integers(0, h), rng.integers(0, w)
                m[y0 : y0 + rng.integers(1, h + 1), x0 : x0 + rng.integers(1, w + 1)] = 1
            if not m.any():
                m[rng.integers(0, h), rng.integers(0, w)] = 1
            assert encode_rle(BinaryMask.from_array(m)) == _exact_rle(m), (h, w)
    full = np.ones((9, 4), np.uint8)
    assert encode_rle(BinaryMask.from_array(full)) == _exact_rle(full)
    with pytest.raises(ValueError):
        encode_rle(BinaryMask.from_array(np.zeros((3, 3), np.uint8)))


def test_polygons_match_imantics_on_full_mask():
    import imantics

    m = np.zeros((60, 70), np.uint8)
    cv2.ellipse(m, (30, 25), (12, 8), 20, 0, 360, 255, -1)
    m[40:50, 50:66] = 255  # a second component
    polys, degenerate, holes = mask_to_polygons(BinaryMask.from_array(m))
    assert (degenerate, holes) == (0, 0)
    seed = [p.tolist() for p in imantics.Mask(m).polygons().polygons]
    assert sorted(polys) == sorted(seed)


def test_polygons_holes_and_degenerates():
    ring = np.zeros((30, 30), np.uint8)
    ring[5:20, 5:20] = 1
    ring[10:14, 10:14] = 0
    polys, degenerate, holes = mask_to_polygons(BinaryMask.from_array(ring))
    assert holes == 1 and degenerate == 0 and len(polys) == 1
    line = np.zeros((10, 10), np.uint8)
    line[3, 2:8] = 1
    polys, degenerate, holes = mask_to_polygons(BinaryMask.from_array(line))
    assert polys == [] and degenerate == 1
    dot = np.zeros((10, 10), np.uint8)
    dot[4, 4] = 1  # a one-point contour: degenerate
    dot[8:10, 8:10] = 1  # a 2x2 square: a 4-point contour of area 1, kept
    polys, degenerate, holes = mask_to_polygons(BinaryMask.from_array(dot))
    assert degenerate == 1 and polys == [[8, 8, 8, 9, 9, 9, 9, 8]]


def _write(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), arr)
    return str(path)


def _image(tmp_path, masks, size=(40, 50), name="img"):
    """One raw image folder with the given mask arrays; returns its RawTrainImage."""
    root = tmp_path / name
    img = _write(root / "images" / f"{name}.png", np.full(size + (3,), 200, np.uint8))
    files = [_write(root / "masks" / f"mask_{i:04d}.png", m) for i, m in enumerate(masks, 1)]
    return RawTrainImage(name, img, tuple(files))


def _blob(size, y, x, h, w, value=255):
    m = np.zeros(size, np.uint8)
    m[y : y + h, x : x + w] = value
    return m


def test_convert_image_checks(tmp_path):
    size = (40, 50)
    nb = _blob(size, 20, 20, 5, 5)
    nb[21, 21] = 7
    masks = [
        _blob(size, 2, 3, 6, 8),
        np.zeros(size, np.uint8),  # empty: skipped
        _blob(size, 5, 8, 6, 6),  # overlaps the first: kept, reported
        nb,  # non-binary: reported, foreground = > 0
    ]
    rec = _image(tmp_path, masks, size)
    entry, anns, report = convert_image(rec, 7)
    assert entry == {"id": 7, "file_name": "img.png", "height": 40, "width": 50}
    assert len(anns) == 3 and report.nuclei == 3
    assert report.skipped == {"empty mask": 1}
    kinds = report.warning_counts()
    assert kinds["overlap"] == 1 and kinds["non-binary"] == 1 and kinds["empty mask"] == 1
    assert any("mask_0003.png overlaps" in m and "mask_0001.png" in m for _, m in report.warnings)
    first = anns[0]
    assert first["bbox"] == [3, 2, 8, 6] and first["area"] == 48
    assert first["iscrowd"] == 0 and first["category_id"] == 1 and first["image_id"] == 7
    for a, m in zip(anns, [masks[0], masks[2], masks[3]]):
        assert np.array_equal(mask_util.decode(a["segmentation"]), (m > 0).astype(np.uint8))
        assert a["area"] == int((m > 0).sum())


def test_convert_image_size_mismatch(tmp_path):
    rec = _image(tmp_path, [_blob((40, 51), 1, 1, 3, 3)], size=(40, 50))
    with pytest.raises(RawDataError) as e:
        convert_image(rec, 1)
    assert "mask_0001.png" in str(e.value) and "51x40" in str(e.value) and "50x40" in str(e.value)


def test_convert_image_polygon_skips_degenerate(tmp_path):
    size = (30, 30)
    line = np.zeros(size, np.uint8)
    line[5, 3:20] = 255
    rec = _image(tmp_path, [_blob(size, 10, 10, 6, 6), line], size)
    _, anns, report = convert_image(rec, 1, fmt="polygon")
    assert len(anns) == 1 and report.skipped == {"no valid polygon": 1}
    assert report.warning_counts()["degenerate polygon"] == 1
    with pytest.raises(ValueError, match="unknown annotation format"):
        convert_image(rec, 1, fmt="bitmask")


def test_round_trip_and_parallel_equals_serial(synthetic_raw):
    images = scan_train(synthetic_raw).images
    # Start OpenCV's thread pool in this (parent) process first: forked workers must still not hang.
    cv2.GaussianBlur(np.zeros((2000, 2000), np.float32), (0, 0), 5)
    serial, rep1 = masks_to_coco(images, workers=1, progress=False)
    parallel, rep2 = masks_to_coco(images, workers=2, progress=False)
    assert serial == parallel
    assert rep1.summary() == rep2.summary() and not rep1.warnings
    assert [a["id"] for a in serial["annotations"]] == list(range(1, len(serial["annotations"]) + 1))
    assert [i["id"] for i in serial["images"]] == [1, 2, 3, 4]
    sources = [p for r in images for p in r.mask_files]
    assert len(sources) == len(serial["annotations"])
    for ann, path in zip(serial["annotations"], sources):
        src = (cv2.imread(path, cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint8)
        assert np.array_equal(mask_util.decode(ann["segmentation"]), src), path
        x, y, w, h = ann["bbox"]
        ys, xs = np.nonzero(src)
        assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        assert ann["area"] == src.sum()


def test_polygon_mode_iou(synthetic_raw):
    images = scan_train(synthetic_raw).images[:1]
    coco, report = masks_to_coco(images, fmt="polygon", workers=1, progress=False)
    h, w = coco["images"][0]["height"], coco["images"][0]["width"]
    ious = []
    for ann, path in zip(coco["annotations"], images[0].mask_files):
        assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann["segmentation"])
        rle = mask_util.merge(mask_util.frPyObjects(ann["segmentation"], h, w))
        src = _exact_rle(cv2.imread(path, cv2.IMREAD_GRAYSCALE))
        ious.append(mask_util.iou([rle], [src], [0])[0, 0])
    assert len(ious) == len(images[0].mask_files) - sum(report.skipped.values())
    assert np.mean(ious) > 0.8


def test_worker_error_names_file(tmp_path):
    good = _image(tmp_path, [_blob((20, 20), 1, 1, 4, 4)], (20, 20), name="a")
    bad = _image(tmp_path, [_blob((20, 20), 1, 1, 4, 4)], (20, 20), name="b")
    with open(bad.mask_files[0], "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(RawDataError) as e:
        masks_to_coco([good, bad], workers=2, progress=False)
    assert e.value.path == bad.mask_files[0]


def test_ctrl_c_during_the_workers_fork_is_not_lost():
    """A Ctrl-C arriving while worker_pool forks (here: sent from an at-fork hook) reaches the
    parent as KeyboardInterrupt; before, Python raised it inside logging's at-fork callback, printed
    "Exception ignored" and went on (prepare_data then exited 0)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import os, signal, sys
        from d2_nucleus.data.mask2coco import worker_pool
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if run with '&'
        os.register_at_fork(before=lambda: os.kill(os.getpid(), signal.SIGINT))
        try:
            pool = worker_pool(2)
        except KeyboardInterrupt:
            sys.exit(130)
        pool.shutdown()
        sys.exit(3)
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root,
                       env=dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", "")))
    assert r.returncode == 130, r.stderr[-2000:]
    assert "Exception ignored" not in r.stderr, r.stderr[-2000:]
