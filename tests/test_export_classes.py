# -*- coding: utf-8 -*-
"""Classes of nuclei in the outputs (d2_nucleus.export.classes): table columns, QuPath, overlay, summary."""
import numpy as np
import pytest

from d2_nucleus.export.classes import NucleusClasses, class_summary, prob_column


def test_nucleus_classes_outputs():
    classes = NucleusClasses(["Tumor cell", "lymphocyte"], [(200, 0, 0), (30, 90, 255)], np.array([1, 0, 1]),
                             np.array([[.2, .8], [.9, .1], [.4, .6]]))
    cols = classes.columns()
    assert cols["type"].tolist() == ["lymphocyte", "Tumor cell", "lymphocyte"]
    assert prob_column("Tumor cell") == "prob_Tumor_cell" and prob_column("?!") == "prob_type"
    assert cols["prob_lymphocyte"].tolist() == [.8, .1, .6] and cols["prob_Tumor_cell"].tolist() == [.2, .9, .4]
    assert classes.classifications() == [{"name": "lymphocyte", "color": [30, 90, 255]},
                                         {"name": "Tumor cell", "color": [200, 0, 0]},
                                         {"name": "lymphocyte", "color": [30, 90, 255]}]
    assert classes.qupath_measurements()[1] == {"Probability Tumor cell": 0.9, "Probability lymphocyte": 0.1}
    colors = classes.label_colors()
    assert colors.shape == (4, 3) and colors[0].tolist() == [0, 0, 0] and colors[2].tolist() == [200, 0, 0]
    assert classes.legend() == [("Tumor cell: 1", (200, 0, 0)), ("lymphocyte: 2", (30, 90, 255))]
    summary = classes.summary(area_mm2=0.5)
    assert summary["lymphocyte"] == {"count": 2, "fraction": 2 / 3, "density_per_mm2": 4.0, "color": [30, 90, 255]}
    assert classes.color_map == {"Tumor cell": (200, 0, 0), "lymphocyte": (30, 90, 255)}


def test_class_summary_and_bad_input():
    summary = class_summary(["a", "a", "b"], ["a", "b", "c"])
    assert summary["a"]["count"] == 2 and summary["c"] == {"count": 0, "fraction": 0.0, "density_per_mm2": None}
    assert class_summary([], ["a"])["a"]["fraction"] is None
    empty = NucleusClasses(["a"], [(1, 2, 3)], np.zeros(0, np.int64), np.zeros((0, 1)))
    assert empty.columns()["type"].tolist() == [] and empty.columns()["prob_a"].shape == (0,)
    assert empty.label_colors().shape == (1, 3) and empty.classifications() == []
    assert list(NucleusClasses(["a"], [(1, 2, 3)], [0]).columns()) == ["type"]  # no probabilities, no prob_ columns
    with pytest.raises(ValueError, match="class indices"):
        NucleusClasses(["a"], [(1, 2, 3)], [1])
    with pytest.raises(ValueError, match="colours"):
        NucleusClasses(["a", "b"], [(1, 2, 3)], [0])
