# -*- coding: utf-8 -*-
"""Type classifier: training on synthetic features, its file (save, load, refusals), the features."""
import io
import os
import json
import zipfile

import numpy as np
import pytest

from d2_nucleus.types.classifier import BadClassifierError, TypeClassifier, default_colors
from d2_nucleus.types.features import MEASUREMENT_FEATURES, feature_matrix
from d2_nucleus.types.training import fit_classifier, make_recipe, split_names

NAMES = ["epithelial", "fibroblast", "inflammatory"]


def _blobs(n_per_class=(400, 150, 40), dim=12, seed=0):
    """Three Gaussian classes (imbalanced) in ``dim`` dimensions, separated along 3 of them."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k, n in enumerate(n_per_class):
        center = np.zeros(dim)
        center[k] = 3.0
        xs.append(rng.normal(center, 1.0, (n, dim)) * 5 + 100)  # raw scale: standardisation matters
        ys.append(np.full(n, k))
    return np.concatenate(xs), np.concatenate(ys)


def _recipe(dim=12, fingerprint="abc"):
    return make_recipe(["box"], dim, fingerprint, 0.2, "ruifrok", {"config": "x.yaml"})


@pytest.mark.parametrize("hidden", [0, 32])
def test_fit_balanced_and_roundtrip(hidden, tmp_path):
    x, y = _blobs()
    xt, yt = _blobs(n_per_class=(200, 200, 200), seed=1)
    clf = fit_classifier(x, y, NAMES, default_colors(NAMES), _recipe(), hidden_dim=hidden, epochs=20, lr=0.05, seed=0)
    index, probs = clf.predict({"box": xt})
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert (index == probs.argmax(axis=1)).all()
    recall = [(index[yt == k] == k).mean() for k in range(3)]
    assert min(recall) > 0.85, recall  # the rare class is found too (class-balanced loss)
    assert clf.info["class_counts"] == [400, 150, 40] and clf.feature_dim == 12
    assert len(clf.layers) == (2 if hidden else 1)
    # the same seed gives the same classifier
    again = fit_classifier(x, y, NAMES, default_colors(NAMES), _recipe(), hidden_dim=hidden, epochs=20, lr=0.05, seed=0)
    np.testing.assert_allclose(again.predict_proba(xt), probs, atol=1e-6)
    # save / load: same probabilities, names, colours, recipe
    path = tmp_path / "types.npz"
    clf.save(str(path))
    loaded = TypeClassifier.load(str(path))
    np.testing.assert_allclose(loaded.predict_proba(xt), probs, atol=1e-6)
    assert loaded.class_names == NAMES and loaded.colors == clf.colors and loaded.recipe == clf.recipe
    assert loaded.info["samples"] == len(y)
    with pytest.raises(Exception, match="already exists"):
        clf.save(str(path))


def test_nan_features_and_errors():
    x, y = _blobs(dim=4)
    x[::7, 1] = np.nan  # undefined measurements: the training mean
    clf = fit_classifier(x, y, NAMES, default_colors(NAMES), _recipe(4), hidden_dim=0, epochs=5)
    assert np.isfinite(clf.mean).all() and np.isfinite(clf.predict_proba(x)).all()
    with pytest.raises(ValueError, match="labels must be in 0..2"):
        fit_classifier(x, y + 1, NAMES, default_colors(NAMES), _recipe(4), epochs=1)
    with pytest.raises(ValueError, match="expects 4 features a nucleus, got 3"):
        clf.predict({"box": x[:, :3]})


def test_refuses_other_model_and_bad_files(tmp_path):
    x, y = _blobs(dim=4)
    clf = fit_classifier(x, y, NAMES, default_colors(NAMES), _recipe(4, "f" * 64), hidden_dim=8, epochs=2)
    clf.check_model("f" * 64)
    with pytest.raises(BadClassifierError, match="another segmentation model") as e:
        clf.check_model("0" * 64, "types.npz")
    assert "\n" not in str(e.value) and str(e.value).startswith("types.npz: ")
    good = clf.to_bytes()

    def refused(data: bytes, match: str):
        path = tmp_path / "bad.npz"
        path.write_bytes(data)
        with pytest.raises(BadClassifierError, match=match) as err:
            TypeClassifier.load(str(path))
        assert "\n" not in str(err.value) and str(path) in str(err.value)

    refused(good[: len(good) // 2], "corrupt or truncated")
    refused(b"not a zip file at all", "corrupt or truncated")
    refused(b"", "corrupt or truncated")

    def rewrite(**changes):
        with np.load(io.BytesIO(good), allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        arrays.update(changes)
        buffer = io.BytesIO()
        np.savez(buffer, **{k: v for k, v in arrays.items() if v is not None})
        return buffer.getvalue()

    header = json.loads(bytes(clf.to_bytes and np.load(io.BytesIO(good))["header"]).decode())
    refused(rewrite(layer0_weight=np.zeros((8, 5), np.float32)), "layer 0 has shape")
    refused(rewrite(mean=None), "not a valid type classifier file")
    refused(rewrite(header=np.frombuffer(b"{]", np.uint8)), "not a valid type classifier file")
    bad = dict(header, format="something else")
    refused(rewrite(header=np.frombuffer(json.dumps(bad).encode(), np.uint8)), "no d2_nucleus type classifier header")
    bad = dict(header, classes=["a", "b"], colors=[[1, 2, 3], [4, 5, 6]])
    refused(rewrite(header=np.frombuffer(json.dumps(bad).encode(), np.uint8)), "2 classes")
    # an object (pickled) array is never loaded
    buffer = io.BytesIO()
    np.savez(buffer, header=np.array([{"a": 1}], dtype=object))
    refused(buffer.getvalue(), "corrupt or truncated|pickled")
    # a zip that is not an npz
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("x.txt", "hello")
    refused(buffer.getvalue(), "not a valid type classifier file")
    with pytest.raises(BadClassifierError, match="does not exist"):
        TypeClassifier.load(str(tmp_path / "missing.npz"))
    with pytest.raises(BadClassifierError, match="is a folder"):
        TypeClassifier.load(str(tmp_path))


def test_feature_matrix_and_output_helpers():
    columns = {c: np.arange(3, dtype=float) + i for i, c in enumerate(MEASUREMENT_FEATURES)}
    box = np.ones((3, 5))
    x = feature_matrix(["measurements", "box", "context"], {"box": box, "context": 2 * box}, columns)
    assert x.shape == (3, 10 + len(MEASUREMENT_FEATURES))  # box, context, measurements
    np.testing.assert_allclose(x[:, 5:10], 2)
    np.testing.assert_allclose(x[:, 10], columns[MEASUREMENT_FEATURES[0]])
    with pytest.raises(ValueError, match="needs the model's box features"):
        feature_matrix(["box"], None, columns)
    with pytest.raises(ValueError, match="different numbers of nuclei"):
        feature_matrix(["box", "measurements"], {"box": np.ones((2, 5))}, columns)
    with pytest.raises(ValueError, match="resolution"):
        feature_matrix(["measurements"], None, dict(columns, area_um2=np.full(3, np.nan)))
    assert default_colors(["epithelial", "x", "y"])[0] == (200, 0, 0)
    assert len(set(default_colors([f"c{i}" for i in range(8)]))) == 8


def test_split_names_seeded():
    names = [f"img{i}" for i in range(1, 81)]
    train, test = split_names(names, 0.25, 0)
    assert len(test) == 20 and len(train) == 60 and not set(train) & set(test)
    assert split_names(list(reversed(names)), 0.25, 0) == (train, test)


def test_types_import_light_and_help():
    """The readers, metrics, classifier and output helpers (and the CLIs' --help) load no torch."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = ("import sys\nimport d2_nucleus.types.points, d2_nucleus.types.matching, d2_nucleus.types.metrics\n"
            "import d2_nucleus.types.classifier, d2_nucleus.types.outputs, d2_nucleus.types.features\n"
            "import d2_nucleus.types.evaluation, d2_nucleus.export.image_outputs\n"
            "print(sorted(m for m in ('torch', 'detectron2') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
    for tool in ("train_types.py", "eval_types.py"):
        code = (f"import runpy, sys; sys.argv = ['{tool}', '--help']\n"
                f"try:\n    runpy.run_path('tools/{tool}', run_name='__main__')\nexcept SystemExit:\n    pass\n"
                "print('HEAVY', sorted(m for m in ('torch', 'detectron2') if m in sys.modules))")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root, timeout=120)
        assert r.returncode == 0 and "--points" in r.stdout and r.stdout.strip().endswith("HEAVY []"), r.stderr


def _patch_data(n=300, seed=0):
    """Patches whose class is a dark disc (0), a bright ring (1) or plain noise (2)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:16, :16] - 7.5
    r = np.hypot(yy, xx)
    y = rng.integers(0, 3, n)
    p = rng.normal(170, 20, (n, 16, 16, 3))
    p[y == 0] -= 80 * (r < 4)[None, :, :, None]
    p[y == 1] += 60 * ((r > 4) & (r < 7))[None, :, :, None]
    return np.clip(p, 0, 255).astype(np.uint8), y


def test_patch_classifier_learns_folds_and_roundtrips(tmp_path):
    import torch

    from d2_nucleus.types.network import _build, _fold, patch_embedding

    patches, y = _patch_data()
    recipe = make_recipe(["patch"], 0, None, None, "ruifrok")
    clf = fit_classifier(np.zeros((len(y), 0)), y, NAMES, default_colors(NAMES), recipe, hidden_dim=16, epochs=15,
                         lr=5e-3, batch_size=64, patches=patches, patch_channels=(4, 8))
    test_patches, test_y = _patch_data(seed=1)
    index, probs = clf.predict(None, None, test_patches)
    assert (index == test_y).mean() > 0.9 and clf.needs_patches and len(clf.convs) == 4
    with pytest.raises(ValueError, match="image patch around each nucleus"):
        clf.predict(None, None, None)
    path = tmp_path / "patch.npz"
    clf.save(str(path))
    loaded = TypeClassifier.load(str(path))
    np.testing.assert_allclose(loaded.predict_proba(np.zeros((len(test_y), 0)), test_patches), probs, atol=1e-6)
    assert loaded.recipe["patch"]["px"] == 16 and loaded.recipe["patch"]["channels"] == [4, 8]

    # batch norms folded into the convolutions give the network's own outputs
    torch.manual_seed(0)
    net = _build(0, 3, 0, 0.0, (4,))
    for m in net.patch:
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 2)
    net.eval()
    convs, layers = _fold(net)
    mean, std = np.array([0.5, 0.4, 0.6]), np.array([0.2, 0.3, 0.25])
    from d2_nucleus.types.network import patch_tensor

    with torch.no_grad():
        want = net.patch(patch_tensor(test_patches[:20], mean, std)).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(patch_embedding(convs, test_patches[:20], mean, std), want, rtol=1e-4, atol=1e-5)


def test_extract_patches_resamples_to_the_physical_size():
    from d2_nucleus.types.patches import extract_patches

    image = np.zeros((100, 120, 3), np.uint8)
    image[40:60, 50:70] = 255  # a 20 x 20 px square centred at (59.5, 49.5)
    at_size = extract_patches(image, [[59.5, 49.5]], mpp=0.55, patch_px=32, patch_um=17.6)
    assert at_size.shape == (1, 32, 32, 3) and (at_size[0, :, :, 0] == 255).sum() == 400
    # the same tissue at twice the resolution: the same patch
    big = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)
    twice = extract_patches(big, [[119.5, 99.5]], mpp=0.275, patch_px=32, patch_um=17.6)
    assert np.abs(twice.astype(int) - at_size.astype(int)).max() <= 1
    # near the border: mirrored, never out of bounds
    edge = extract_patches(image, [[0, 0], [119, 99], [np.nan, 3]], mpp=0.55)
    assert edge.shape == (3, 32, 32, 3) and not edge[2].any()
    with pytest.raises(ValueError, match="resolution"):
        extract_patches(image, [[1, 1]], mpp=None)
