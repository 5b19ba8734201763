"""d2_nucleus.utils.rle: every pycocotools call we make, with lists of more than 255 objects."""
import numpy as np
import pycocotools.mask as mask_util
import pytest

from d2_nucleus.utils import rle as rle_util

N = 300  # > 255: pycocotools' area() overflowed a uint8 under numpy 2 for longer lists
H, W = 64, 48


@pytest.fixture(scope="module")
def masks():
    rng = np.random.default_rng(0)
    m = np.zeros((H, W, N), dtype=np.uint8)
    for i in range(N):
        y, x = rng.integers(0, H - 6), rng.integers(0, W - 6)
        h, w = rng.integers(1, 7, size=2)
        m[y : y + h, x : x + w, i] = 1
    m[:, :, 7] = 0  # one empty mask
    return m


@pytest.fixture(scope="module")
def rles(masks):
    return rle_util.encode(masks)


def test_encode_decode_roundtrip(masks, rles):
    assert isinstance(rles, list) and len(rles) == N
    assert np.array_equal(rle_util.decode(rles), masks)
    one = rle_util.encode(masks[:, :, 3].astype(bool))  # any dtype
    assert np.array_equal(rle_util.decode(one), masks[:, :, 3])


@pytest.mark.parametrize("n", [0, 1, 255, 256, N])
def test_area_any_length(masks, rles, n):
    a = rle_util.area(rles[:n])
    assert a.shape == (n,)
    assert np.array_equal(a, masks[:, :, :n].sum(axis=(0, 1)))


def test_area_single_and_pycocotools_bug(masks, rles):
    assert int(rle_util.area(rles[5])) == int(masks[:, :, 5].sum())
    try:  # the bug this module exists for (fixed upstream one day: then this check is moot)
        mask_util.area(rles)
    except OverflowError:
        pass


def test_to_bbox(masks, rles):
    boxes = rle_util.to_bbox(rles)
    assert boxes.shape == (N, 4)
    for i in (0, 100, 299):
        ys, xs = np.nonzero(masks[:, :, i])
        assert list(boxes[i]) == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    assert rle_util.to_bbox([]).shape == (0, 4)


def test_merge_and_iou(masks, rles):
    union = rle_util.decode(rle_util.merge(rles))
    assert np.array_equal(union, masks.max(axis=2))
    inter = rle_util.decode(rle_util.merge(rles[:2], intersect=True))
    assert np.array_equal(inter, masks[:, :, 0] & masks[:, :, 1])
    ious = rle_util.iou(rles, rles, np.zeros(N, dtype=bool))
    assert ious.shape == (N, N)
    nonempty = masks.sum(axis=(0, 1)) > 0
    assert np.allclose(np.diag(ious)[nonempty], 1.0)
    boxes = rle_util.to_bbox(rles)
    assert rle_util.iou(boxes, boxes, [0] * N).shape == (N, N)


def test_fr_py_objects_lists(masks, rles):
    polys = [[1.0, 1.0, 10.0, 1.0, 10.0, 10.0, 1.0, 10.0]] * N
    out = rle_util.fr_py_objects(polys, H, W)
    assert len(out) == N and np.all(rle_util.area(out) == rle_util.area(out[0]))
    boxes = np.tile([2.0, 3.0, 5.0, 4.0], (N, 1))
    assert np.all(rle_util.area(rle_util.fr_py_objects(boxes, H, W)) == 20)
    unc = [{"size": [H, W], "counts": rle_util.rle_counts(r).tolist()} for r in rles]
    back = rle_util.fr_py_objects(unc, H, W)
    assert [b["counts"] for b in back] == [r["counts"] for r in rles]


def test_rle_counts_and_to_compressed(masks, rles):
    for r in rles[:: 37]:
        counts = rle_util.rle_counts(r)
        assert counts.sum() == H * W
        assert counts[1::2].sum() == rle_util.area(r)
        as_str = dict(r, counts=r["counts"].decode())
        assert np.array_equal(rle_util.rle_counts(as_str), counts)
        unc = {"size": [H, W], "counts": counts.tolist()}
        assert rle_util.to_compressed_rle(unc, H, W)["counts"] == r["counts"]
    poly = rle_util.to_compressed_rle([[1, 1, 10, 1, 10, 10]], H, W)
    assert rle_util.area(poly) > 0
    assert rle_util.area(rle_util.to_compressed_rle([[1, 1, 2, 2]], H, W)) == 0  # degenerate
    with pytest.raises(ValueError):
        rle_util.to_compressed_rle({"counts": "x"}, H, W)
    with pytest.raises(TypeError):
        rle_util.to_compressed_rle(3, H, W)


def _random_box_masks(rng, k, img_h, img_w):
    masks, origins, full = [], [], []
    for _ in range(k):
        h, w = rng.integers(1, img_h + 1), rng.integers(1, img_w + 1)
        y0, x0 = rng.integers(0, img_h - h + 1), rng.integers(0, img_w - w + 1)
        m = rng.random((h, w)) < rng.choice([0.0, 0.3, 0.9, 1.0])
        f = np.zeros((img_h, img_w), np.uint8)
        f[y0:y0 + h, x0:x0 + w] = m
        masks.append((m, x0, y0))
        full.append(f)
    return masks, full


@pytest.mark.parametrize("k", [1, 7])
def test_encode_box_masks_equals_full_encode(k):
    """Masks given on their boxes (full-height boxes too, whose runs cross columns) encode like
    pycocotools' encode of the full masks: one at a time and batched."""
    rng = np.random.default_rng(k)
    img_h, img_w = 13, 9
    for _ in range(30):
        masks, full = _random_box_masks(rng, k, img_h, img_w)
        expected = [dict(r, counts=r["counts"].decode("ascii")) for r in
                    (mask_util.encode(np.asfortranarray(f)) for f in full)]
        max_h = max(m.shape[0] for m, _, _ in masks)
        max_w = max(m.shape[1] for m, _, _ in masks)
        padded = np.zeros((k, max_h, max_w), bool)
        for i, (m, _, _) in enumerate(masks):
            padded[i, : m.shape[0], : m.shape[1]] = m
        origins = [(x0, y0) for _, x0, y0 in masks]
        if k == 1:
            assert rle_util.encode_box_masks(masks[0][0][None], origins, (img_h, img_w)) == expected
        assert rle_util.encode_box_masks_batched(
            [(np.arange(k), padded, origins)], k, (img_h, img_w)) == expected
        for r, f in zip(expected, full):
            p = rle_util.rle_pixels(r)
            assert np.array_equal(p, np.flatnonzero(f.T.ravel()))
