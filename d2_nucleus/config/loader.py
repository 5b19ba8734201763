# -*- coding: utf-8 -*-
"""
The one safe config loader every entry point uses: :func:`get_nucleus_cfg` (Detectron2's defaults,
PointRend's and d2_nucleus's keys, a YAML file, command-line overrides) and its parts
:func:`merge_config_file` / :func:`merge_config_list`. Keys of earlier versions are mapped onto
today's (:mod:`.legacy`).
"""
import logging
import re

import yaml

from .checks import check_config_values
from .cpu import add_cpu_config
from .defaults import add_nucleus_config
from .errors import ConfigError
from .legacy import translate_legacy_list
from .slide import add_slide_config
from .types import add_types_config
from .yaml_io import load_config_yaml

__all__ = ["ConfigError", "add_all_config", "check_device", "get_inference_cfg", "get_nucleus_cfg",
           "merge_config_file", "merge_config_list"]


def add_all_config(cfg):
    """Add every d2_nucleus config key (and PointRend's) to a Detectron2 config."""
    from detectron2.projects.point_rend import add_pointrend_config

    add_pointrend_config(cfg)
    add_nucleus_config(cfg)
    add_cpu_config(cfg)
    add_slide_config(cfg)
    add_types_config(cfg)
    return cfg


def _one_line(e) -> str:
    return " ".join(str(e).split())


_TYPE_NAMES = {"CfgNode": "a mapping of keys", "dict": "a mapping of keys", "str": "a string", "int": "an integer",
               "float": "a number", "bool": "a boolean", "tuple": "a list", "list": "a list", "NoneType": "null"}


def _short(e) -> str:
    """One line; yacs's "Type mismatch" message (which prints both values, a whole sub-config or
    a huge list) cut to the key and the two types."""
    msg = _one_line(e.args[0] if isinstance(e, KeyError) and e.args else e)
    m = re.match(r"Type mismatch \(<class '(?:[\w.]+\.)?(\w+)'> vs\. <class '(?:[\w.]+\.)?(\w+)'>\).* for config key: (\S+)$", msg)
    if m:
        want, got, key = _TYPE_NAMES.get(m[1], m[1]), _TYPE_NAMES.get(m[2], m[2]), m[3]
        if (m[1], m[2]) == ("float", "int"):  # yacs does not widen 2 to 2.0
            return f"{key} must be a number written with a decimal point (e.g. 2.0, not 2)"
        return f"{key} must be {want}, got {got}"
    return msg if len(msg) <= 300 else msg[:300] + " ..."


def _merge_loaded(cfg, loaded, config_file) -> None:
    """Merge a loaded file into ``cfg`` as Detectron2's ``CfgNode.merge_from_file`` does (its versioning)."""
    from detectron2.config.compat import downgrade_config, guess_version, upgrade_config

    loaded = type(cfg)(loaded)
    version = loaded.get("VERSION", None)
    if version is None:
        version = guess_version(loaded, config_file)
    if version == cfg.VERSION:
        cfg.merge_from_other_cfg(loaded)
        return
    if not isinstance(version, int) or version > cfg.VERSION:
        raise ConfigError(f"{config_file}: VERSION {version!r} is not a config version up to {cfg.VERSION}")
    old = downgrade_config(cfg, to_version=version)
    old.merge_from_other_cfg(loaded)
    cfg.clear()
    cfg.update(upgrade_config(old))


def merge_config_file(cfg, config_file):
    """
    ``cfg.merge_from_file`` that never runs code and never expands without bound: the file and
    its ``_BASE_`` chain are read by :func:`load_config_yaml` (``yaml.SafeLoader``; Detectron2's
    default falls back to ``yaml.unsafe_load``, which executes ``!!python/...`` tags; keys of
    earlier versions read as today's), then merged as Detectron2's ``CfgNode.merge_from_file``
    does (config versions included). Every problem is a one-line :class:`ConfigError` naming the file.
    """
    try:
        _merge_loaded(cfg, load_config_yaml(config_file), config_file)
    except ConfigError:
        raise
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{mark.name}, line {mark.line + 1}" if mark is not None else config_file
        raise ConfigError(
            f"{where}: refusing to load a YAML tag that would run code or build Python objects "
            f"({_one_line(e.problem)}); configs may hold only plain YAML values"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{config_file}: not valid YAML: {_one_line(e)}") from None
    except (KeyError, ValueError, TypeError, AssertionError) as e:
        # KeyError "Non-existent config key: X", ValueError/TypeError on a value of the wrong type
        raise ConfigError(f"{config_file}: {_short(e)}") from None
    except RecursionError:
        raise ConfigError(f"{config_file}: nested too deeply to be a config") from None
    except OSError as e:  # unreadable
        raise ConfigError(f"{config_file}: {e.strerror or e}") from None


def merge_config_list(cfg, opts):
    """``cfg.merge_from_list`` with one-line :class:`ConfigError` s for command-line overrides."""
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(
            f"config overrides must be KEY VALUE pairs, got {len(opts)} words: {' '.join(map(str, opts))}"
        )
    try:
        cfg.merge_from_list(translate_legacy_list(cfg, opts))
    except (KeyError, ValueError, TypeError, AssertionError) as e:
        raise ConfigError(f"command-line config override: {_short(e)}") from None


def get_nucleus_cfg(config_file=None, opts=None, data_root=None):
    """
    The config every d2_nucleus entry point uses: Detectron2 defaults + PointRend keys + ours,
    then ``config_file`` (read safely: :func:`merge_config_file`), then ``opts`` (KEY VALUE list).
    Falls back to the CPU with a warning when the config asks for CUDA and none is available.

    Raises:
        ConfigError: a missing or unsafe config file, an unknown key, a bad value (of the wrong
            type, or one no run can use: :func:`check_config_values`), or an odd number of
            overrides (one line naming the file or override).
    """
    import torch
    from detectron2.config import get_cfg

    cfg = add_all_config(get_cfg())
    if config_file:
        merge_config_file(cfg, config_file)
    if opts:
        merge_config_list(cfg, opts)
    if data_root:
        cfg.NUCLEUS.DATA_ROOT = data_root
    source = " and ".join(([config_file] if config_file else []) + (["the command-line overrides"] if opts else []))
    check_config_values(cfg, source or "the default config")
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger(__name__).warning("CUDA is not available: running on the CPU (MODEL.DEVICE cpu).")
        cfg.MODEL.DEVICE = "cpu"
    return cfg


def get_inference_cfg(config_file, opts=None, weights=None, device=None):
    """
    The config of an inference CLI (tools/predict.py, the slide tools, tools/freeze_group_norm.py):
    :func:`get_nucleus_cfg` of ``config_file`` (required) and ``opts``, with ``weights`` as
    ``MODEL.WEIGHTS`` and ``device`` as ``MODEL.DEVICE`` when given. Not frozen.

    Raises:
        ConfigError: as :func:`get_nucleus_cfg`.
    """
    if not config_file:
        raise ConfigError("no config file given (--config-file)")
    cfg = get_nucleus_cfg(config_file, opts)
    if weights is not None:
        cfg.MODEL.WEIGHTS = weights
    if device is not None:
        cfg.MODEL.DEVICE = device
    return cfg


def check_device(device: str) -> str:
    """
    ``device`` if this process can put a model there; otherwise a one-line :class:`RuntimeError`
    (``--device cuda`` without CUDA, ``cuda:3`` on a machine with fewer GPUs, a misspelt name).
    Called where a model is built (:class:`d2_nucleus.engine.NucleusPredictor`), not where a config
    is made: a Dask client on a machine without GPUs passes ``cuda`` on to its GPU workers.
    """
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise RuntimeError(
            f"device {device!r} is not one torch knows ({_one_line(e)}); use cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise RuntimeError(
                f"device {device!r}: CUDA is not available here (torch {torch.__version__}"
                f"{'' if torch.version.cuda else ', a build without CUDA'}, no GPU visible); use --device cpu"
            )
        if dev.index is not None and dev.index >= count:
            raise RuntimeError(f"device {device!r}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}")
    return device
