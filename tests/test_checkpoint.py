"""Weights loading (d2_nucleus.checkpoint), the trainer state on resume (engine.trainer_state) and the Detectron2 install."""
import os
import subprocess
import sys
from unittest import mock

import pytest
import torch
from detectron2.engine import DefaultTrainer

from d2_nucleus.checkpoint import NucleusCheckpointer, WeightsNotFoundError
from d2_nucleus.engine.trainer_state import TrainerStateMixin, _defines_trainer_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_detectron2_imports_without_d2_nucleus():
    """A fresh interpreter uses the installed Detectron2 without importing d2_nucleus first."""
    code = (
        "import sys, detectron2.layers, detectron2.evaluation\n"
        "from detectron2.engine import DefaultTrainer, DefaultPredictor\n"
        "from detectron2.evaluation.fast_eval_api import COCOeval_opt\n"
        "from detectron2.model_zoo import get_config_file\n"
        "from detectron2.projects.point_rend import add_pointrend_config\n"
        "assert get_config_file('COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml')\n"
        "assert 'd2_nucleus' not in sys.modules\n"
        "print(COCOeval_opt.__module__)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr


def test_evaluator_uses_faster_coco_eval_whatever_detectron2():
    """COCOeval comes from faster-coco-eval itself, not from the installed Detectron2's
    COCOeval_opt (the install patch no longer rebinds it)."""
    from faster_coco_eval.core.faster_eval_api import COCOeval_faster
    from pycocotools.coco import COCO

    from d2_nucleus.evaluation.coco_eval import evaluate_coco

    gt = COCO()
    gt.dataset = {"images": [{"id": 1, "height": 10, "width": 10}], "categories": [{"id": 1, "name": "x"}],
                  "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], "area": 16,
                                   "iscrowd": 0}]}
    gt.createIndex()
    ev = evaluate_coco(gt, [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], "score": 0.9}], "bbox",
                       max_dets=[100])
    assert isinstance(ev, COCOeval_faster)
    assert ev.eval["precision"][0, :, 0, 0, 0].min() == pytest.approx(1.0)


def test_install_patch_leaves_coco_eval_to_d2_nucleus():
    with open(os.path.join(ROOT, "tools", "patches", "detectron2-v0.6-no-extension.patch")) as f:
        patch = f.read()
    assert "faster_coco_eval" not in patch


def test_installer_is_idempotent():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "install_detectron2.py")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "leaving it alone" in r.stdout or "is present" in r.stdout


def test_missing_extension_ops_fail_clearly():
    try:
        import detectron2._C  # noqa: F401
        pytest.skip("compiled Detectron2: rotated ops are available")
    except ImportError:
        pass
    from detectron2.layers.rotated_boxes import pairwise_iou_rotated

    with pytest.raises(RuntimeError, match="without its C\\+\\+/CUDA extension"):
        pairwise_iou_rotated(torch.zeros(1, 5), torch.zeros(1, 5))


def test_checkpoint_weights_only(tmp_path):
    model = torch.nn.Linear(3, 2)
    good = tmp_path / "good.pth"
    torch.save({"model": model.state_dict(), "iteration": 5}, good)
    target = torch.nn.Linear(3, 2)
    NucleusCheckpointer(target).load(str(good))
    assert torch.equal(target.weight, model.weight)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    bad = tmp_path / "bad.pth"
    torch.save({"model": model.state_dict(), "x": Evil()}, bad)
    with pytest.raises(RuntimeError, match="weights_only"):
        NucleusCheckpointer(torch.nn.Linear(3, 2)).load(str(bad))


def test_missing_weights_name_file_and_offline_alternative(tmp_path):
    missing = str(tmp_path / "nope.pth")
    with pytest.raises(WeightsNotFoundError) as e:
        NucleusCheckpointer(torch.nn.Linear(3, 2)).load(missing)
    assert missing in str(e.value) and "configs/scratch" in str(e.value)


class _Recorder:
    def __init__(self):
        self.loaded = []

    def state_dict(self):
        return {"optimizer": {"state": 1}}

    def load_state_dict(self, sd):
        self.loaded.append(sd)


def _bare(cls):
    t = object.__new__(cls)
    t._hooks, t.iter, t._trainer = [], 0, _Recorder()
    return t


def test_trainer_state_added_for_v06():
    class T(TrainerStateMixin, DefaultTrainer):
        pass

    t = _bare(T)
    sd = t.state_dict()
    assert sd["_trainer"] == {"optimizer": {"state": 1}}
    t.load_state_dict({"iteration": 7, "_trainer": {"optimizer": {"state": 2}}})
    assert t.iter == 7 and t._trainer.loaded == [{"optimizer": {"state": 2}}]


def test_trainer_state_noop_for_complete_detectron2():
    """Against a Detectron2 whose DefaultTrainer saves "_trainer" itself, the mixin does nothing."""

    class CompleteDefaultTrainer(DefaultTrainer):  # what newer Detectron2 releases do
        def state_dict(self):
            ret = super().state_dict()
            ret["_trainer"] = self._trainer.state_dict()
            return ret

        def load_state_dict(self, state_dict):
            super().load_state_dict(state_dict)
            self._trainer.load_state_dict(state_dict["_trainer"])

    class T(TrainerStateMixin, CompleteDefaultTrainer):
        pass

    assert _defines_trainer_state(T, "load_state_dict")
    t = _bare(T)
    with mock.patch.object(_Recorder, "state_dict", wraps=t._trainer.state_dict) as sd:
        assert t.state_dict()["_trainer"] == {"optimizer": {"state": 1}}
        assert sd.call_count == 1  # not saved twice
    t.load_state_dict({"iteration": 3, "_trainer": {"optimizer": {"state": 9}}})
    assert t._trainer.loaded == [{"optimizer": {"state": 9}}]  # restored once, by Detectron2


def test_installer_leaves_a_compiled_detectron2_alone(tmp_path):
    """A Detectron2 whose compiled _C imports (a source build) is never replaced."""
    pkg = tmp_path / "detectron2"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("__version__ = '0.6+cu'\n")
    (pkg / "_C.py").write_text("")  # stands in for the compiled extension
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "install_detectron2.py")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "leaving it alone" in r.stdout
    assert "pip" not in r.stdout  # nothing downloaded or installed


def test_checkpoint_save_is_all_or_nothing(tmp_path, monkeypatch):
    """A save that fails (or is killed) midway leaves the previous checkpoint and last_checkpoint."""
    ckpt = NucleusCheckpointer(torch.nn.Linear(3, 2), str(tmp_path))
    ckpt.save("model_final", iteration=1)
    before = (tmp_path / "model_final.pth").read_bytes()
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"

    def dies_midway(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_final", iteration=2)
    assert (tmp_path / "model_final.pth").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]
