# -*- coding: utf-8 -*-
"""
What Detectron2 v0.6 (as installed by tools/install_detectron2.py) still needs at run time on
current PyTorch. Everything here is a no-op where the installed Detectron2 already does it, so a
complete source build (with ``detectron2._C``, or a newer release) is used as it is.

1. :class:`NucleusCheckpointer` is the one loading policy for every weights file and URL
   (``MODEL.WEIGHTS``, ``--weights``, ``last_checkpoint``; ``detectron2://`` and http(s) URLs are
   downloaded first by :func:`fetch_weights`, every network wait bounded by
   ``MODEL.WEIGHTS_DOWNLOAD_TIMEOUT``, then go through the same policy); see
   :meth:`NucleusCheckpointer._load_file` and :meth:`NucleusCheckpointer._load_model`. Untrusted
   files never run code; weights that do not fit the model stop the run instead of leaving a
   half-random model.
2. :class:`TrainerStateMixin` puts the optimizer (and AMP grad-scaler) state into training
   checkpoints and restores it on ``--resume``: v0.6's ``DefaultTrainer`` saves only the iteration
   and the LR-scheduler hook, so a resumed run loses its momentum. Newer Detectron2 versions save
   ``"_trainer"`` themselves; then the mixin does nothing.
"""
import collections
import io
import logging
import os
import pickle
import re
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
import zipfile

import numpy as np
import torch

try:  # NumPy 2 (numpy.core is a deprecated alias there)
    from numpy._core import multiarray as _np_multiarray
    from numpy._core.numeric import _frombuffer as _np_frombuffer
except ImportError:  # NumPy 1
    from numpy.core import multiarray as _np_multiarray
    from numpy.core.numeric import _frombuffer as _np_frombuffer
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine.train_loop import TrainerBase

from .utils.file_io import atomic_write, atomic_write_text

__all__ = [
    "NucleusCheckpointer",
    "check_weights_path",
    "fetch_weights",
    "TrainerStateMixin",
    "WeightsError",
    "WeightsNotFoundError",
    "WeightsMismatchError",
    "safe_unpickle",
]

logger = logging.getLogger(__name__)

OFFLINE_HINT = (
    "Without network access, train from scratch instead: use a config from configs/scratch/ "
    "(GroupNorm, MODEL.WEIGHTS \"\"), or pass MODEL.WEIGHTS pointing at a local file."
)


class WeightsError(RuntimeError):
    """Model weights that cannot be used: unsafe, unreadable, or not fitting the model."""


class WeightsNotFoundError(FileNotFoundError):
    pass


class WeightsMismatchError(WeightsError):
    """The weights are of another architecture (or hold nothing of this model)."""


def check_weights_path(path: str) -> None:
    """
    Raise :class:`WeightsNotFoundError` naming what is wrong with a local weights path: empty, a
    folder, or not found (URLs pass: they are checked when downloaded).
    """
    if not path:
        raise WeightsNotFoundError(
            "no model weights: pass --weights (or MODEL.WEIGHTS) with a checkpoint, "
            "e.g. output/<run>/model_final.pth from tools/train_net.py"
        )
    if "://" in path:
        return
    if os.path.isdir(path):
        raise WeightsNotFoundError(f"model weights {path!r} is a folder, not a checkpoint file (e.g. {path}/model_final.pth)")
    if not os.path.isfile(path):
        raise WeightsNotFoundError(
            f"model weights {path!r} not found; train a model with tools/train_net.py "
            "and pass its model_final.pth / model_best.pth with --weights (or MODEL.WEIGHTS)"
        )


_DETECTRON2_PREFIX = "detectron2://"
_DETECTRON2_URL = "https://dl.fbaipublicfiles.com/detectron2/"


def fetch_weights(url: str, timeout: float) -> str:
    """
    The local copy of weights at an ``http(s)://`` or ``detectron2://`` URL: the file in fvcore's
    download cache (``$FVCORE_CACHE``, default ``~/.torch/iopath_cache``; the paths iopath uses, so
    earlier downloads are reused), downloaded when it is not there. Every network wait (connecting,
    each read) is bounded by ``timeout`` seconds (``MODEL.WEIGHTS_DOWNLOAD_TIMEOUT``; 0 = none):
    iopath's download has none, so a server that accepts and never answers hung the run. The
    download goes to a temporary file renamed when complete. Other paths are returned as they are.

    Raises:
        WeightsNotFoundError: no answer within ``timeout``, or the server or network refused.
    """
    if url.startswith(_DETECTRON2_PREFIX):
        url = _DETECTRON2_URL + url[len(_DETECTRON2_PREFIX):]
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https"):
        return url
    from iopath.common.file_io import get_cache_dir

    cached = os.path.join(get_cache_dir(), os.path.dirname(parsed.path.lstrip("/")), url.split("/")[-1])
    if os.path.isfile(cached):
        return cached
    logger.info(f"Downloading {url} ...")
    try:
        with urllib.request.urlopen(url, timeout=timeout or None) as response:
            with atomic_write(cached, overwrite=True) as f:
                shutil.copyfileobj(response, f, 1 << 20)
    except (socket.timeout, TimeoutError):
        raise WeightsNotFoundError(
            f"model weights {url!r}: no answer from the server within {timeout:g} s "
            "(MODEL.WEIGHTS_DOWNLOAD_TIMEOUT; raise it for a slow connection). " + OFFLINE_HINT
        ) from None
    except urllib.error.HTTPError as e:
        raise WeightsNotFoundError(f"model weights {url!r}: the server answered {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e.strerror or e
        if isinstance(reason, (socket.timeout, TimeoutError)):
            reason = f"no answer within {timeout:g} s (MODEL.WEIGHTS_DOWNLOAD_TIMEOUT)"
        raise WeightsNotFoundError(f"model weights {url!r} unreachable: {reason}. " + OFFLINE_HINT) from None
    logger.info(f"URL {url} cached in {cached}")
    return cached


# -------------------------------------------------------------------------------------------------
# Pickles (.pkl): Detectron2 / Caffe2 model-zoo files are pickled dicts of NumPy arrays. They are
# read with an Unpickler that can build only those (NumPy arrays, dtypes and scalars, and Python's
# plain containers), so a crafted pickle cannot call anything: ``find_class`` is the only way a
# pickle reaches code, and it refuses every other name.
# -------------------------------------------------------------------------------------------------
_SAFE_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _np_multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _np_multiarray.scalar,
    # protocol 5 pickles: an array from its raw bytes, dtype and shape
    ("numpy.core.numeric", "_frombuffer"): _np_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _np_frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
    # Python 3 pickles (protocol < 3) of NumPy arrays store their bytes as _codecs.encode(str, "latin1")
    ("_codecs", "encode"): __import__("_codecs").encode,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("__builtin__", "bytearray"): bytearray,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _SAFE_PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it needs {module}.{name}, which is not NumPy data") from None


def safe_unpickle(f, filename: str = "<pickle>"):
    """
    Unpickle ``f`` (a binary file) allowing only NumPy arrays and plain containers; anything else
    (a function call, a class) raises :class:`WeightsError` before it runs.
    """
    try:
        # latin1: Python 2 pickles of the Caffe2 / Detectron1 model zoo (as Detectron2 reads them)
        return _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise WeightsError(
            f"{filename}: refusing to unpickle: {e} (only NumPy arrays and plain containers are "
            "loaded from .pkl files)"
        ) from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, MemoryError) as e:
        raise WeightsError(f"{filename}: not a readable .pkl weights file (truncated or corrupt: {e})") from None


def _torch_load(filename: str, f):
    """``torch.load`` of tensors and plain containers only. ``weights_only=True`` is passed
    explicitly, so TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot turn arbitrary unpickling back on."""
    data = f.read()
    try:
        return torch.load(io.BytesIO(data), map_location=torch.device("cpu"), weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        text = str(e)
        # torch's weights_only unpickler names the global a pickle wants to call; other errors are
        # damaged or foreign files
        detail = re.search(r"(unsupported GLOBAL|Unsupported global:?) ([\w.]+)", text)
        if detail:
            raise WeightsError(
                f"{filename}: refusing to load a checkpoint that needs arbitrary pickled code "
                f"(torch.load(weights_only=True) refused {detail.group(2)}). "
                "Re-save it as a plain state dict (torch.save(model.state_dict())) if you trust its origin."
            ) from None
        if data[:4] == b"PK\x03\x04" and not zipfile.is_zipfile(io.BytesIO(data)):
            reason = "truncated or corrupt zip archive"
        else:
            reason = text.strip().splitlines()[-1] if text.strip() else type(e).__name__
            if "Weights only load failed" in text:
                reason = "unpickling failed"
        raise WeightsError(
            f"{filename}: not a readable PyTorch checkpoint ({len(data)} bytes; {reason}); "
            "was it truncated or is it another kind of file?"
        ) from None


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
            loaded = _torch_load(filename, f)
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


def _defines_trainer_state(cls, method):
    """Whether the first class after TrainerStateMixin in cls's MRO that defines ``method`` handles
    the "_trainer" state itself (anything but TrainerBase's generic version does)."""
    mro = cls.__mro__
    start = mro.index(TrainerStateMixin) + 1
    for klass in mro[start:]:
        if method in klass.__dict__:
            return klass is not TrainerBase
    return False


class TrainerStateMixin:
    """
    Mix into a DefaultTrainer subclass (before DefaultTrainer) so that checkpoints hold the inner
    SimpleTrainer/AMPTrainer state (optimizer, grad scaler) and ``resume`` restores it.
    """

    def state_dict(self):
        ret = super().state_dict()
        if "_trainer" not in ret:
            ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict and not _defines_trainer_state(type(self), "load_state_dict"):
            self._trainer.load_state_dict(state_dict["_trainer"])
            logger.info("Restored optimizer state from the checkpoint.")
        elif "_trainer" not in state_dict:
            logger.warning("The checkpoint has no optimizer state; the optimizer starts fresh.")
