# -*- coding: utf-8 -*-
"""
Where weights come from: a local file (:func:`check_weights_path`: empty, a folder, missing are one
line each) or an http(s) / ``detectron2://`` URL, downloaded into fvcore's cache by
:func:`fetch_weights` with every network wait bounded by ``MODEL.WEIGHTS_DOWNLOAD_TIMEOUT``; and
the errors of weights that cannot be used.
"""
import logging
import os
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request

from ..utils.file_io import atomic_write

__all__ = ["OFFLINE_HINT", "WeightsError", "WeightsNotFoundError", "WeightsMismatchError", "check_weights_path",
           "fetch_weights"]

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
