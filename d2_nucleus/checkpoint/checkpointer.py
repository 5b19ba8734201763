# -*- coding: utf-8 -*-
"""
:class:`NucleusCheckpointer`: the one loading policy for every weights file and URL
(``MODEL.WEIGHTS``, ``--weights``, ``last_checkpoint``; URLs are downloaded first by
:func:`.weights.fetch_weights`, then go through the same policy). Untrusted files never run code
(:mod:`.safe_load`); weights that do not fit the model stop the run instead of leaving a
half-random model. It is a no-op layer where the installed Detectron2 already does the same.
"""
import logging
import os
import re

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..utils.file_io import atomic_write, atomic_write_text
from .safe_load import safe_unpickle, torch_load
from .weights import OFFLINE_HINT, WeightsError, WeightsMismatchError, WeightsNotFoundError, fetch_weights

__all__ = ["NucleusCheckpointer"]

logger = logging.getLogger(__name__)


# Layers whose shapes depend on the number of classes (box / mask / point / MaskIoU predictors):
# when fine-tuning weights of another dataset (e.g. COCO's 80 classes), these are expected not to
# fit and are trained from scratch, as in Detectron2.
_CLASS_DEPENDENT = re.compile(
    r"^roi_heads\.(.+\.)?(cls_score|bbox_pred|predictor|prediction)\.|^roi_heads\.mask_point_head\."
)


class NucleusCheckpointer(DetectionCheckpointer):
    """
    DetectionCheckpointer with one loading policy for every weights path and URL:

    * ``.pth`` (and any other name): ``torch.load(weights_only=True)``, explicitly (tensors and
      plain containers only, whatever TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD says).
    * ``.pkl`` (Detectron2 / Caffe2 model zoo): a restricted unpickler that builds only NumPy
      arrays and plain containers (:func:`safe_unpickle`).
    * ``.pyth`` (pycls): ``torch.load(weights_only=True)``.
    * URLs (``detectron2://``, ``https://``) are downloaded by Detectron2's path manager, then
      loaded by the rules above.

    Weights must fit the model (:meth:`_load_model`):

    * ``strict=True`` (evaluation, prediction, and always when resuming a training run from its
      ``last_checkpoint``): every parameter and buffer of the model must be in the checkpoint with
      its shape; otherwise :class:`WeightsMismatchError`.
    * ``strict=False`` (training from ``MODEL.WEIGHTS``, e.g. ImageNet or COCO weights): missing
      parameters are trained from scratch, and the class-count-dependent predictor layers may
      differ in shape, as in Detectron2; a shape mismatch anywhere else (another architecture) or
      a checkpoint of which no parameter fits is a :class:`WeightsMismatchError`.
    """

    def __init__(self, model, save_dir="", *, strict=True, download_timeout: float = 60.0, **checkpointables):
        """``download_timeout``: seconds a URL's download may wait for the server
        (callers pass ``cfg.MODEL.WEIGHTS_DOWNLOAD_TIMEOUT``; :func:`fetch_weights`)."""
        super().__init__(model, save_dir, **checkpointables)
        self.strict = strict
        self._strict_now = strict
        self.download_timeout = download_timeout

    def load(self, path, *args, **kwargs):
        if path and "://" not in path and os.path.isdir(path):
            raise WeightsNotFoundError(f"model weights {path!r} (MODEL.WEIGHTS) is a folder, not a checkpoint file")
        if path and "://" in path:
            path = fetch_weights(path, self.download_timeout)
        self._loading = path
        try:
            return super().load(path, *args, **kwargs)
        except (AssertionError, OSError) as e:  # fvcore asserts the file exists; URLError is OSError
            if path and not os.path.isfile(path):
                raise WeightsNotFoundError(
                    f"Model weights {path!r} (MODEL.WEIGHTS) not found or unreachable: {e}. " + OFFLINE_HINT
                ) from e
            raise
        except (ValueError, TypeError) as e:  # e.g. non-tensor values, optimizer state of another model
            raise WeightsError(f"{path}: the checkpoint cannot be loaded into this model: {e}") from None

    def resume_or_load(self, path, *, resume=True):
        """
        As Detectron2's, with a checked ``last_checkpoint``: when resuming, an empty or dangling
        ``last_checkpoint`` is an error naming it (not a complaint about ``MODEL.WEIGHTS``), and
        the run's own checkpoint must fit the model exactly.
        """
        if resume and self.has_checkpoint():
            marker = os.path.join(self.save_dir, "last_checkpoint")
            with open(marker) as f:
                name = f.read().strip()
            if not name:
                raise WeightsError(f"{marker}: is empty; it should name the checkpoint to resume from")
            path = os.path.join(self.save_dir, name)
            if not os.path.isfile(path):
                raise WeightsError(f"{marker}: names {name!r}, but {path} does not exist")
            self._strict_now = True
            try:
                return self.load(path)
            finally:
                self._strict_now = self.strict
        return self.load(path, checkpointables=[])

    def save(self, name, **kwargs):
        """As fvcore's, but all or nothing: a run killed while saving leaves the previous
        checkpoint and ``last_checkpoint`` intact (temporary file, then rename)."""
        if not self.save_dir or not self.save_to_disk or "://" in self.save_dir:
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to {}".format(save_file))
        with atomic_write(save_file, overwrite=True) as f:
            torch.save(data, f)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        if "://" in self.save_dir:
            return super().tag_last_checkpoint(last_filename_basename)
        atomic_write_text(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename, overwrite=True)

    def _load_file(self, filename):
        if filename.endswith(".pkl"):
            with self.path_manager.open(filename, "rb") as f:
                data = safe_unpickle(f, filename)
            if not isinstance(data, dict):
                raise WeightsError(f"{filename}: not a weights file (a pickled {type(data).__name__}, not a dict)")
            if "model" in data and "__author__" in data:  # Detectron2 model-zoo format
                self.logger.info("Reading a file from '{}'".format(data["__author__"]))
                return data
            # Caffe2 / Detectron1 model zoo (as DetectionCheckpointer reads it)
            if "blobs" in data:
                data = data["blobs"]
            data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
            return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}
        with self.path_manager.open(filename, "rb") as f:
            loaded = torch_load(filename, f)
        if not isinstance(loaded, dict):
            raise WeightsError(f"{filename}: not a checkpoint (a {type(loaded).__name__}, expected a dict of tensors)")
        if filename.endswith(".pyth"):  # pycls
            if "model_state" not in loaded:
                raise WeightsError(f"{filename}: pycls checkpoints (.pyth) must contain 'model_state'")
            model_state = {k: v for k, v in loaded["model_state"].items() if not k.endswith("num_batches_tracked")}
            return {"model": model_state, "__author__": "pycls", "matching_heuristics": True}
        if "model" not in loaded:
            loaded = {"model": loaded}
        return loaded

    def _load_model(self, checkpoint):
        """Load as Detectron2 does, then enforce the policy of the class docstring."""
        path = getattr(self, "_loading", "the checkpoint")
        if not isinstance(checkpoint.get("model"), dict):
            raise WeightsError(f"{path}: has no 'model' state dict")
        incompatible = super()._load_model(checkpoint)
        model_keys = list(self.model.state_dict().keys())
        missing = set(incompatible.missing_keys)
        shapes = [(k, tuple(c), tuple(m)) for k, c, m in incompatible.incorrect_shapes]
        bad_shape_keys = {k for k, _, _ in shapes}
        loaded = [k for k in model_keys if k not in missing and k not in bad_shape_keys]
        problems = []
        if not loaded:
            problems.append(f"none of the model's {len(model_keys)} parameters/buffers is in it")
        if self._strict_now:
            wrong_shapes = shapes
            if missing and loaded:
                problems.append(f"{len(missing)} of {len(model_keys)} parameters/buffers are missing "
                                f"(e.g. {sorted(missing)[0]})")
        else:
            wrong_shapes = [s for s in shapes if not _CLASS_DEPENDENT.match(s[0])]
        if wrong_shapes:
            k, c, m = wrong_shapes[0]
            problems.append(f"{len(wrong_shapes)} have other shapes (e.g. {k}: {c} in the file, {m} in the model)")
        if problems:
            hint = ("use the config the weights were trained with" if self._strict_now
                    else "use weights of the same architecture (backbone depth, widths, norms)")
            raise WeightsMismatchError(
                f"{path}: weights do not fit the model of this config: " + "; ".join(problems) + f"; {hint}"
            )
        return incompatible
