# -*- coding: utf-8 -*-
"""
Weights files read without running code: ``.pkl`` (Detectron2 / Caffe2 model zoo) through an
unpickler that can build only NumPy arrays and plain containers (:func:`safe_unpickle`), every
other file through ``torch.load(weights_only=True)`` (:func:`torch_load`), each refusal one line
naming the file.
"""
import collections
import io
import pickle
import re
import zipfile

import numpy as np
import torch

try:  # NumPy 2 (numpy.core is a deprecated alias there)
    from numpy._core import multiarray as _np_multiarray
    from numpy._core.numeric import _frombuffer as _np_frombuffer
except ImportError:  # NumPy 1
    from numpy.core import multiarray as _np_multiarray
    from numpy.core.numeric import _frombuffer as _np_frombuffer

from .weights import WeightsError

__all__ = ["safe_unpickle", "torch_load"]


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


def torch_load(filename: str, f):
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
