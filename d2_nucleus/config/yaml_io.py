# -*- coding: utf-8 -*-
"""
Config files read safely: :func:`load_config_yaml` is fvcore's ``load_yaml_with_base`` (a YAML
file with its ``_BASE_`` chain merged) for untrusted files. It uses ``yaml.SafeLoader`` only (no
tag builds Python objects or runs code), checks sizes before anything is expanded, and refuses
``_BASE_`` cycles, URLs, empty files and a top level that is not a mapping, each with a one-line
:class:`ConfigError` naming the file. Each file's keys of earlier d2_nucleus versions are read
as today's (:mod:`.legacy`) before files are merged. :func:`d2_nucleus.config.merge_config_file`
merges its result into a config; every entry point loads configs through it.
"""
import os

import yaml

from .errors import ConfigError

__all__ = ["ConfigError", "MAX_CONFIG_BYTES", "MAX_CONFIG_FILES", "MAX_CONFIG_VALUES", "load_config_yaml"]


# Bounds of a config and its _BASE_ chain, checked before anything is expanded: Detectron2's configs
# are a few KB and a few hundred values; a YAML "billion laughs" (aliases of aliases: 600 bytes,
# 10^9 values) would spin the CPU when the values are used, and a _BASE_ cycle recurse forever.
MAX_CONFIG_BYTES = 1 << 20  # one file
MAX_CONFIG_VALUES = 100_000  # YAML nodes of all files together, aliases counted as expanded
MAX_CONFIG_FILES = 64  # the file and its _BASE_ files, nested or listed


def _count_nodes(node, budget: list, path: str, memo: dict, active: set) -> int:
    """Nodes of ``node`` with every alias expanded (memoised: a DAG is counted in linear time);
    raises ConfigError once ``budget[0]`` is used up, or on a recursive alias."""
    key = id(node)
    if key in memo:
        n = memo[key]
    elif key in active:
        raise ConfigError(f"{path}: a YAML alias refers to itself (a recursive structure); not a config")
    else:
        active.add(key)
        n = 1
        if isinstance(node, yaml.SequenceNode):
            n += sum(_count_nodes(child, budget, path, memo, active) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            n += sum(_count_nodes(k, budget, path, memo, active) + _count_nodes(v, budget, path, memo, active)
                     for k, v in node.value)
        active.discard(key)
        memo[key] = n
        budget[0] -= n - 1  # the children; the node itself was counted by its parent
        if budget[0] < 0:
            raise ConfigError(
                f"{path}: more than {MAX_CONFIG_VALUES:,} YAML values once its aliases are expanded "
                "(a YAML alias bomb?); configs hold a few hundred"
            )
    return n


def _read_yaml(path: str, budget: list):
    """One YAML file with ``yaml.SafeLoader`` (plain values only), size-checked before expansion."""
    with open(path, "rb") as f:
        text = f.read(MAX_CONFIG_BYTES + 1)
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: more than the {MAX_CONFIG_BYTES:,} bytes a config may have")
    loader = yaml.SafeLoader(text)
    loader.name = path  # error marks name the file
    try:
        node = loader.get_single_node()  # composes the node graph; aliases stay shared references
        if node is None:
            raise ConfigError(f"{path}: empty config file (expected KEY: value lines, e.g. _BASE_: ...)")
        budget[0] -= 1
        _count_nodes(node, budget, path, {}, set())
        data = loader.construct_document(node)
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level is a {type(data).__name__}, expected a mapping of config keys (KEY: value)"
        )
    return data


def _merge_dicts(a: dict, b: dict, path: str, prefix: str = "") -> None:
    """Merge ``a`` into ``b`` (``a`` wins), as fvcore's ``load_yaml_with_base``."""
    for k, v in a.items():
        if isinstance(v, dict) and k in b:
            if not isinstance(b[k], dict):
                raise ConfigError(f"{path}: {prefix}{k} is a mapping here but a single value in its _BASE_")
            _merge_dicts(v, b[k], path, f"{prefix}{k}.")
        else:
            b[k] = v


def load_config_yaml(config_file: str, _chain=(), _budget=None, _files=None) -> dict:
    """
    The config file with its ``_BASE_`` chain merged (``_BASE_`` paths are relative to the file
    naming them), as Detectron2/fvcore's ``load_yaml_with_base`` but safe for untrusted files:
    ``yaml.SafeLoader`` only; :data:`MAX_CONFIG_BYTES` per file, :data:`MAX_CONFIG_VALUES` YAML
    values in all (aliases counted as expanded, before anything is built from them) and
    :data:`MAX_CONFIG_FILES` files; ``_BASE_`` cycles, URLs, an empty file and a top level that
    is not a mapping are refused. Every problem is a one-line :class:`ConfigError` naming the file.
    """
    budget = [MAX_CONFIG_VALUES] if _budget is None else _budget
    files = [0] if _files is None else _files
    if not os.path.isfile(config_file):
        what = "is a folder" if os.path.isdir(config_file) else "does not exist"
        named_by = f" (the _BASE_ of {_chain[-1][1]})" if _chain else ""
        raise ConfigError(f"config file {config_file!r}{named_by} {what}")
    real = os.path.realpath(config_file)
    if real in [r for r, _ in _chain]:
        cycle = [name for r, name in _chain[[r for r, _ in _chain].index(real):]] + [config_file]
        raise ConfigError(f"{config_file}: _BASE_ cycle: {' -> '.join(cycle)}")
    files[0] += 1
    if files[0] > MAX_CONFIG_FILES:
        raise ConfigError(f"{_chain[0][1]}: more than {MAX_CONFIG_FILES} config files in its _BASE_ chain")
    from .legacy import translate_legacy_dict  # (imports Detectron2's CfgNode through .defaults)

    data = translate_legacy_dict(_read_yaml(config_file, budget), config_file)
    bases = data.pop("_BASE_", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(f"{config_file}: _BASE_ must be a file name or a list of file names")
    merged = {}
    chain = tuple(_chain) + ((real, config_file),)
    for base in bases:
        if "://" in base:
            raise ConfigError(f"{config_file}: _BASE_ {base!r} is a URL; configs may only name local files")
        base = os.path.expanduser(base)
        if not os.path.isabs(base):
            base = os.path.normpath(os.path.join(os.path.dirname(config_file), base))
        _merge_dicts(load_config_yaml(base, chain, budget, files), merged, base)
    _merge_dicts(data, merged, config_file)
    return merged
