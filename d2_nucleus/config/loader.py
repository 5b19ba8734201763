# -*- coding: utf-8 -*-
"""
The one safe config loader every entry point uses: :func:`get_nucleus_cfg` (Detectron2's defaults,
PointRend's and d2_nucleus's keys, a YAML file, command-line overrides) and its parts
:func:`merge_config_file` / :func:`merge_config_list`. Keys of earlier versions are mapped onto
today's (:mod:`.legacy`).
"""
import logging
import os

import yaml
from detectron2.config import CfgNode

from ..utils.autocast import resolve_cpu_bf16
from .cpu import add_cpu_config, check_cpu_config
from .defaults import add_nucleus_config
from .legacy import translate_legacy_dict, translate_legacy_list
from .slide import add_slide_config

__all__ = ["ConfigError", "add_all_config", "check_device", "get_inference_cfg", "get_nucleus_cfg",
           "merge_config_file", "merge_config_list"]


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the file (or override)."""


class _SafeYamlLoader(CfgNode):
    """
    Detectron2's ``load_yaml_with_base`` with every file of the ``_BASE_`` chain read by
    ``yaml.safe_load`` and its keys of earlier d2_nucleus versions translated (:mod:`.legacy`).
    Used to load files only; configs stay Detectron2's :class:`CfgNode`.
    """

    @classmethod
    def load_yaml_with_base(cls, filename, allow_unsafe=False):
        loaded = super().load_yaml_with_base(filename, allow_unsafe=False)
        return translate_legacy_dict(loaded, str(filename)) if isinstance(loaded, dict) else loaded


def add_all_config(cfg):
    """Add every d2_nucleus config key (and PointRend's) to a Detectron2 config."""
    from detectron2.projects.point_rend import add_pointrend_config

    add_pointrend_config(cfg)
    add_nucleus_config(cfg)
    add_cpu_config(cfg)
    add_slide_config(cfg)
    return cfg


def _one_line(e) -> str:
    return " ".join(str(e).split())


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
    if version > cfg.VERSION:
        raise ConfigError(f"{config_file}: config VERSION {version} is newer than this Detectron2's {cfg.VERSION}")
    old = downgrade_config(cfg, to_version=version)
    old.merge_from_other_cfg(loaded)
    cfg.clear()
    cfg.update(upgrade_config(old))


def merge_config_file(cfg, config_file):
    """
    ``cfg.merge_from_file`` that never runs code: the file and its ``_BASE_`` chain are read with
    ``yaml.safe_load`` (``allow_unsafe=False``; Detectron2's default falls back to
    ``yaml.unsafe_load``, which executes ``!!python/...`` tags). Every problem is a one-line
    :class:`ConfigError` naming the file.
    """
    if not os.path.isfile(config_file):
        what = "is a folder" if os.path.isdir(config_file) else "does not exist"
        raise ConfigError(f"config file {config_file!r} {what}")
    try:
        _merge_loaded(cfg, _SafeYamlLoader.load_yaml_with_base(config_file), config_file)
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
        msg = _one_line(e.args[0] if isinstance(e, KeyError) and e.args else e)
        raise ConfigError(f"{config_file}: {msg}") from None
    except OSError as e:  # a _BASE_ that does not exist
        raise ConfigError(f"{config_file}: {e.strerror or e}: {getattr(e, 'filename', '') or ''}".rstrip(": ")) from None


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
        msg = _one_line(e.args[0] if isinstance(e, KeyError) and e.args else e)
        raise ConfigError(f"command-line config override: {msg}") from None


def get_nucleus_cfg(config_file=None, opts=None, data_root=None):
    """
    The config every d2_nucleus entry point uses: Detectron2 defaults + PointRend keys + ours,
    then ``config_file`` (read safely: :func:`merge_config_file`), then ``opts`` (KEY VALUE list).
    Falls back to the CPU with a warning when the config asks for CUDA and none is available.

    Raises:
        ConfigError: a missing or unsafe config file, an unknown key, a bad value, or an odd
            number of overrides (one line naming the file or override).
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
    try:
        check_cpu_config(cfg)
        resolve_cpu_bf16(cfg.SOLVER.CPU_BF16)
    except ValueError as e:
        raise ConfigError(f"{config_file or 'config'}: {e}") from None
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
