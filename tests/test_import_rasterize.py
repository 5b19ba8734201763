# -*- coding: utf-8 -*-
"""The rasterisation rules of d2_nucleus.data.rasterize: which pixels an outline covers, repairs, overlaps."""
import numpy as np
import pytest
from shapely.geometry import MultiPolygon, Polygon, box

from d2_nucleus.data.rasterize import instance_crops, paint_instances, rasterize, to_polygonal
from import_data import outlines_of, synthetic_image, trace_pixel_edges


def full(geom, h=12, w=12):
    out = np.zeros((h, w), bool)
    c = rasterize(geom, h, w)
    if c is not None:
        m, x0, y0 = c
        out[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]] = m
    return out


def test_pixel_edge_rectangle_covers_exactly_its_pixels():
    # pixel (x, y) covers [x, x+1) x [y, y+1): the box 2..5 x 3..7 holds columns 2-4, rows 3-6
    m = full(box(2, 3, 5, 7))
    assert m.sum() == 12 and m[3:7, 2:5].all()


def test_centres_on_the_outline_go_to_the_polygon_on_their_lower_right():
    # a ring through the centres of the boundary pixels: its left and top rows are in, right and bottom out
    m = full(Polygon([(2.5, 3.5), (4.5, 3.5), (4.5, 6.5), (2.5, 6.5)]))
    assert m.sum() == 6 and m[3:6, 2:4].all()
    # so a pixel-edge outline scaled by 1/2 (edges through centres) keeps its area: 4 x 4 px -> 2 x 2
    assert full(box(0.5, 0.5, 2.5, 2.5)).sum() == 4 and full(box(1, 1, 3, 3)).sum() == 4


def test_outlines_sharing_edges_through_centres_never_share_a_pixel():
    """Any edge direction: a fan of triangles around a pixel centre tiles it, each centre claimed once."""
    c = (6.5, 6.5)
    ring = [(0.5, 0.5), (6.5, 0.5), (12.5, 0.5), (12.5, 6.5), (12.5, 12.5), (6.5, 12.5), (0.5, 12.5), (0.5, 6.5)]
    parts = [Polygon([c, ring[i], ring[(i + 1) % len(ring)]]) for i in range(len(ring))]
    counts = sum(full(p, 13, 13).astype(int) for p in parts)
    assert counts.max() == 1
    np.testing.assert_array_equal(counts == 1, full(box(0.5, 0.5, 12.5, 12.5), 13, 13))


def test_a_centre_just_outside_is_outside():
    m = full(box(2.51, 3.0, 5.0, 7.0))  # pixel column 2's centre (2.5) is left of the edge
    assert not m[:, 2].any() and m[3:7, 3:5].all()


def test_holes_and_multipolygons():
    ring = box(1, 1, 8, 8).difference(box(3, 3, 6, 6))
    m = full(ring)
    assert m.sum() == 49 - 9 and not m[3:6, 3:6].any()
    mp = MultiPolygon([box(0, 0, 2, 2), box(5, 5, 7, 8)])
    assert full(mp).sum() == 4 + 6


def test_clipped_at_the_image_border_and_none_outside():
    m = full(box(-3, -2, 2, 2), 6, 6)
    assert m.sum() == 4 and m[:2, :2].all()
    assert rasterize(box(-5, -5, -1, -1), 6, 6) is None
    assert rasterize(box(6, 0, 9, 3), 6, 6) is None  # touches x = W only


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pixel_edge_outlines_of_real_shapes_rasterise_back_exactly(seed):
    """Outlines traced along pixel edges (area == pixel count) give back exactly their pixels,
    also where a mask's pixels touch diagonally (the traced ring touches itself)."""
    _, labels = synthetic_image(seed, 128, 25)
    rng = np.random.default_rng(seed)
    # add ragged masks: diagonal touches, one-pixel lines, holes
    ragged = rng.random((20, 20)) < 0.5
    labels[100:120, 100:120][ragged & (labels[100:120, 100:120] == 0)] = labels.max() + 1
    for k, geom in enumerate(outlines_of(labels), start=1):
        assert geom.area == (labels == k).sum()
        valid, repaired = to_polygonal(geom)
        np.testing.assert_array_equal(full(valid, 128, 128), labels == k, err_msg=f"label {k}")


def test_self_intersecting_outline_is_repaired():
    bowtie = Polygon([(0, 0), (8, 8), (8, 0), (0, 8)])
    assert not bowtie.is_valid
    valid, repaired = to_polygonal(bowtie)
    assert repaired and valid.is_valid and valid.area == pytest.approx(32)
    m = full(valid, 9, 9)
    left = full(Polygon([(0, 0), (4, 4), (0, 8)]), 9, 9)
    right = full(Polygon([(8, 0), (4, 4), (8, 8)]), 9, 9)
    np.testing.assert_array_equal(m, left | right)
    assert to_polygonal(Polygon([(0, 0), (1, 1), (2, 2)]))[0] is None  # no area left


def test_overlap_goes_to_the_smaller_instance_whatever_the_order():
    big, small = rasterize(box(0, 0, 8, 8), 10, 10), rasterize(box(5, 5, 10, 10), 10, 10)
    for crops, small_label in (([big, small], 2), ([small, big], 1)):
        labels = paint_instances(crops, 10, 10)
        assert (labels[5:10, 5:10] == small_label).all()
        assert (labels == 3 - small_label).sum() == 64 - 9
    # equal sizes: the later one keeps the shared pixels
    a, b = rasterize(box(0, 0, 4, 4), 10, 10), rasterize(box(2, 2, 6, 6), 10, 10)
    labels = paint_instances([a, b], 10, 10)
    assert (labels[2:4, 2:4] == 2).all()
    # a larger nucleus wholly under smaller ones has no pixel left: absent
    parts = [rasterize(box(0, 0, 2, 4), 10, 10), rasterize(box(2, 0, 4, 4), 10, 10)]
    whole = rasterize(box(0, 0, 4, 4), 10, 10)
    labels = paint_instances(parts + [whole, None], 10, 10)
    final = instance_crops(labels, [(c[1], c[2], c[0].shape[1], c[0].shape[0]) for c in parts + [whole]] + [None])
    assert final[2] is None and final[3] is None and final[0][0].sum() == 8
