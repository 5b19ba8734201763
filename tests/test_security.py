"""
Untrusted files never run code (issue 11): crafted .pkl / .pyth / .pth weights (also downloaded
from a URL, also with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1) and YAML configs (also as a _BASE_) each
try to create a marker file; the tests assert that no marker appears and that the error is one
clear line naming the file. Also the one weights policy: what fits, what is refused.
"""
import functools
import glob
import http.server
import io
import os
import pickle
import threading

import numpy as np
import pytest
import torch

from d2_nucleus.checkpoint import NucleusCheckpointer, WeightsError, WeightsMismatchError, safe_unpickle
from d2_nucleus.config import ConfigError, get_nucleus_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Evil:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _net():
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def _numpy_state(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "PWNED"
    yield m
    assert not m.exists(), "untrusted file ran code"


def test_evil_pkl_is_refused(tmp_path, marker):
    net = _net()
    for name, payload in [
        ("top.pkl", _Evil(marker)),
        ("nested.pkl", {"model": _numpy_state(net), "__author__": "x", "extra": [_Evil(marker)]}),
    ]:
        path = tmp_path / name
        path.write_bytes(pickle.dumps(payload, protocol=2))
        with pytest.raises(WeightsError) as e:
            NucleusCheckpointer(_net()).load(str(path))
        msg = str(e.value)
        assert str(path) in msg and "posix.system" in msg and "\n" not in msg
        assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_model_zoo_pkl_still_loads(tmp_path, protocol):
    """Detectron2 model-zoo .pkl files (dicts of NumPy arrays) load through the safe unpickler."""
    src = _net()
    path = tmp_path / "zoo.pkl"
    data = {"model": _numpy_state(src), "__author__": "Detectron2 Model Zoo", "scalar": np.float32(1.5)}
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    dst = _net()
    NucleusCheckpointer(dst).load(str(path))
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)


def test_safe_unpickle_allows_only_numpy_and_containers():
    arr = np.arange(6, dtype=np.int16).reshape(2, 3)
    got = safe_unpickle(io.BytesIO(pickle.dumps({"a": [arr, (1, 2.0, "s", b"b")], "s": {1}}, protocol=2)))
    assert np.array_equal(got["a"][0], arr) and got["a"][1] == (1, 2.0, "s", b"b") and got["s"] == {1}
    for bad in (functools.partial(int, "3"), torch.zeros(1), np.load):
        with pytest.raises(WeightsError, match="refusing to unpickle"):
            safe_unpickle(io.BytesIO(pickle.dumps(bad)))


@pytest.mark.parametrize("suffix", [".pyth", ".pth", ".pt"])
def test_evil_torch_file_refused_even_with_force_env(tmp_path, marker, monkeypatch, suffix):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 makes torch.load unpickle anything unless weights_only
    is passed explicitly; fvcore/Detectron2 do not pass it (.pyth ran code before the fix)."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    net = _net()
    path = tmp_path / f"evil{suffix}"
    key = "model_state" if suffix == ".pyth" else "model"
    torch.save({key: net.state_dict(), "x": _Evil(marker)}, path)
    with pytest.raises(WeightsError) as e:
        NucleusCheckpointer(_net()).load(str(path))
    assert str(path) in str(e.value) and "arbitrary pickled code" in str(e.value)


def test_pycls_pyth_still_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path = tmp_path / "ok.pyth"
    src = _net()
    torch.save({"model_state": src.state_dict(), "epoch": 3}, path)
    ckpt = NucleusCheckpointer(_net())._load_file(str(path))
    assert ckpt["__author__"] == "pycls" and set(ckpt["model"]) == set(src.state_dict())


def test_evil_pkl_from_a_url_is_refused(tmp_path, marker, monkeypatch):
    """http(s) (and detectron2://, which maps to https) weights are downloaded, then loaded by the
    same policy."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "model_final.pkl").write_bytes(pickle.dumps({"model": {"w": _Evil(marker)}, "__author__": "x"}))
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/model_final.pkl"
        with pytest.raises(WeightsError, match="refusing to unpickle"):
            NucleusCheckpointer(_net()).load(url)
    finally:
        server.shutdown()
        server.server_close()
    assert glob.glob(str(tmp_path / "cache" / "**" / "model_final.pkl"), recursive=True), "it was downloaded"


class _SilentServer:
    """A TCP server that accepts connections (the kernel's backlog) and never answers."""

    def __enter__(self):
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/model_final.pth"

    def __exit__(self, *exc):
        self.sock.close()


def test_weights_url_that_never_answers_times_out(tmp_path, monkeypatch):
    """iopath's download has no timeout: a server that accepts and never answers hung the run
    (issue 27). Now each network wait is bounded (MODEL.WEIGHTS_DOWNLOAD_TIMEOUT)."""
    import time

    from d2_nucleus.checkpoint import WeightsNotFoundError

    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    with _SilentServer() as url:
        t = time.perf_counter()
        with pytest.raises(WeightsNotFoundError, match="no answer from the server within 1 s") as e:
            NucleusCheckpointer(_net(), download_timeout=1).load(url)
        assert time.perf_counter() - t < 10
        assert url in str(e.value) and "\n" not in str(e.value)
    assert not glob.glob(str(tmp_path / "cache" / "**" / "*"), recursive=True) or not [
        p for p in glob.glob(str(tmp_path / "cache" / "**" / "*"), recursive=True) if os.path.isfile(p)
    ]  # nothing partial left in the cache
    # the config's default is bounded too
    assert get_nucleus_cfg().MODEL.WEIGHTS_DOWNLOAD_TIMEOUT == 60
    refused = f"http://127.0.0.1:{_free_port()}/model.pth"  # nothing listens: refused at once
    with pytest.raises(WeightsNotFoundError, match="unreachable"):
        NucleusCheckpointer(_net(), download_timeout=5).load(refused)


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_corrupt_weights_are_named_not_called_pickled_code(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"model": _net().state_dict()}, good)
    data = good.read_bytes()
    cases = {
        "truncated.pth": data[: len(data) // 2],
        "random.pth": np.random.default_rng(0).bytes(4096),
        "empty.pth": b"",
        "truncated.pkl": pickle.dumps({"model": _numpy_state(_net())})[:50],
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(WeightsError) as e:
            NucleusCheckpointer(_net()).load(str(path))
        msg = str(e.value)
        assert str(path) in msg and "\n" not in msg, msg
        assert "arbitrary pickled code" not in msg and ("truncated" in msg or "corrupt" in msg), msg


def _save(tmp_path, name, state):
    path = tmp_path / name
    torch.save({"model": state}, path)
    return str(path)


def test_weights_of_another_architecture_are_refused(tmp_path):
    other = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    path = _save(tmp_path, "other.pth", other.state_dict())
    with pytest.raises(WeightsMismatchError, match=r"other\.pth.*other shapes.*0\.weight: \(8, 3\).*\(4, 3\)"):
        NucleusCheckpointer(_net()).load(path)
    # ... also when fine-tuning: a backbone of another shape is not a "head mismatch"
    with pytest.raises(WeightsMismatchError, match="other shapes"):
        NucleusCheckpointer(_net(), strict=False).load(path)


def test_weights_with_no_matching_key_are_refused(tmp_path):
    path = _save(tmp_path, "unrelated.pth", {"foo.weight": torch.zeros(2, 2)})
    for strict in (True, False):
        with pytest.raises(WeightsMismatchError, match=r"unrelated\.pth.*none of the model's 4 parameters"):
            NucleusCheckpointer(_net(), strict=strict).load(path)


def test_partial_weights_strict_vs_finetuning(tmp_path):
    net = _net()
    partial = {k: v for k, v in net.state_dict().items() if k.startswith("0.")}
    path = _save(tmp_path, "partial.pth", partial)
    with pytest.raises(WeightsMismatchError, match="2 of 4 parameters/buffers are missing"):
        NucleusCheckpointer(_net()).load(path)  # evaluation / prediction: all or nothing
    target = _net()
    NucleusCheckpointer(target, strict=False).load(path)  # training: e.g. an ImageNet backbone
    assert torch.equal(target[0].weight, net[0].weight)


class _Heads(torch.nn.Module):
    """Parameter names like a Detectron2 R-CNN with a class-count-dependent predictor."""

    def __init__(self, classes):
        super().__init__()
        self.backbone = torch.nn.Linear(3, 4)
        self.roi_heads = torch.nn.Module()
        self.roi_heads.box_predictor = torch.nn.Module()
        self.roi_heads.box_predictor.cls_score = torch.nn.Linear(4, classes + 1)
        self.roi_heads.mask_head = torch.nn.Module()
        self.roi_heads.mask_head.predictor = torch.nn.Conv2d(4, classes, 1)


def test_finetuning_from_other_classes_allows_only_predictor_mismatch(tmp_path):
    coco = _Heads(80)
    path = _save(tmp_path, "coco.pth", coco.state_dict())
    target = _Heads(1)
    NucleusCheckpointer(target, strict=False).load(path)
    assert torch.equal(target.backbone.weight, coco.backbone.weight)
    with pytest.raises(WeightsMismatchError, match="roi_heads.box_predictor.cls_score.weight"):
        NucleusCheckpointer(_Heads(1)).load(path)  # evaluating a COCO model as a nucleus model: no


def test_evil_yaml_config_is_refused(tmp_path, marker):
    evil = tmp_path / "evil.yaml"
    evil.write_text(f'MODEL:\n  WEIGHTS: !!python/object/apply:os.system ["touch {marker}"]\n')
    innocent = tmp_path / "innocent.yaml"
    innocent.write_text(f"_BASE_: {evil.name}\nSOLVER:\n  MAX_ITER: 5\n")
    for cfg_file in (evil, innocent):
        with pytest.raises(ConfigError) as e:
            get_nucleus_cfg(str(cfg_file))
        msg = str(e.value)
        assert str(evil) in msg and "line 2" in msg and "\n" not in msg, msg


def test_no_unsafe_yaml_loading_in_the_code():
    """Every config file goes through d2_nucleus.config.merge_config_file (allow_unsafe=False)."""
    offenders = []
    for path in glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True):
        if "/.venv/" in path or path.endswith(os.path.join("d2_nucleus", "config", "loader.py")) or path == __file__:
            continue
        if path.endswith(os.path.join("tests", "test_config_files.py")):  # compares with Detectron2's, allow_unsafe=False
            continue
        with open(path) as f:
            text = f.read()
        if "merge_from_file(" in text or "yaml.load(" in text or "unsafe_load" in text:
            offenders.append(os.path.relpath(path, ROOT))
    assert not offenders
