# -*- coding: utf-8 -*-
"""
Config keys of earlier d2_nucleus versions, mapped onto today's, so that old configs (and the
configs ``tools/freeze_group_norm.py`` wrote beside old checkpoints) keep loading. Each old key met
is logged once as a one-line deprecation note naming its replacement.

===============================================  ====================================================
old keys                                         today
===============================================  ====================================================
MODEL.FAST_GROUP_NORM, MODEL.NATIVE_GROUP_NORM    MODEL.CPU.GROUP_NORM: torch (fast off), nchw
                                                  (fast on, native off), native (both on)
MODEL.NATIVE_ROI_ALIGN, MODEL.ROI_FEATURES_ONCE,  MODEL.CPU.ROI_ALIGN: native (native on), threaded
MODEL.ROI_ALIGN_THREADS                           (features once or threads != 1), torchvision
MODEL.RPN_NMS_THREADS                             MODEL.CPU.RPN_NMS_THREADS
MODEL.NATIVE_ANCHOR_IOU                           MODEL.CPU.ANCHOR_IOU: native / detectron2
MODEL.CPU_TUNE_MALLOC                             MODEL.CPU.TUNE_MALLOC
MODEL.PIXEL_SIZE_UM 0 ("unknown")                 MODEL.PIXEL_SIZE_UM 0.25 (the training data's)
===============================================  ====================================================

The old RPN options acted by converting Detectron2's ``RPN`` in place; today the config names
``NucleusRPN`` (``MODEL.PROPOSAL_GENERATOR.NAME``). A config with the old RPN keys that names
``RPN`` therefore gets ``NucleusRPN`` when those keys asked for its behaviour.
"""
import logging
from typing import Dict, List

from .defaults import TRAINING_DATA_MPP

__all__ = ["LEGACY_KEYS", "translate_legacy_dict", "translate_legacy_list"]

logger = logging.getLogger(__name__)

# old key (under MODEL) -> its old default
LEGACY_KEYS = {
    "FAST_GROUP_NORM": True,
    "NATIVE_GROUP_NORM": True,
    "NATIVE_ROI_ALIGN": True,
    "ROI_FEATURES_ONCE": True,
    "ROI_ALIGN_THREADS": 0,
    "RPN_NMS_THREADS": 0,
    "NATIVE_ANCHOR_IOU": True,
    "CPU_TUNE_MALLOC": True,
}
_warned = set()


def _bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _new_values(old: Dict[str, object]) -> Dict[str, object]:
    """MODEL.CPU values for the old keys ``old`` (the ones not given at their old defaults)."""
    v = {k: old.get(k, d) for k, d in LEGACY_KEYS.items()}
    fast, native_gn = _bool(v["FAST_GROUP_NORM"]), _bool(v["NATIVE_GROUP_NORM"])
    threads = int(v["ROI_ALIGN_THREADS"])
    out = {}
    if "FAST_GROUP_NORM" in old or "NATIVE_GROUP_NORM" in old:
        out["GROUP_NORM"] = "torch" if not fast else ("native" if native_gn else "nchw")
    if {"NATIVE_ROI_ALIGN", "ROI_FEATURES_ONCE", "ROI_ALIGN_THREADS"} & set(old):
        if _bool(v["NATIVE_ROI_ALIGN"]):
            out["ROI_ALIGN"] = "native"
        else:
            out["ROI_ALIGN"] = "threaded" if _bool(v["ROI_FEATURES_ONCE"]) or threads != 1 else "torchvision"
    if "RPN_NMS_THREADS" in old:
        out["RPN_NMS_THREADS"] = int(v["RPN_NMS_THREADS"])
    if "NATIVE_ANCHOR_IOU" in old:
        out["ANCHOR_IOU"] = "native" if _bool(v["NATIVE_ANCHOR_IOU"]) else "detectron2"
    if "CPU_TUNE_MALLOC" in old:
        out["TUNE_MALLOC"] = _bool(v["CPU_TUNE_MALLOC"])
    return out


def _note(source: str, keys) -> None:
    keys = sorted(k for k in keys if (source, k) not in _warned)
    if keys:
        _warned.update((source, k) for k in keys)
        logger.warning("%s: deprecated config keys %s, read as their MODEL.CPU / MODEL.PIXEL_SIZE_UM "
                       "equivalents (d2_nucleus/config/legacy.py)", source, ", ".join(keys))


def _rpn_wanted(cpu: Dict[str, object]) -> bool:
    return int(cpu.get("RPN_NMS_THREADS", 0)) != 1 or cpu.get("ANCHOR_IOU", "native") == "native"


def _cpu_bf16(value) -> str:
    """
    SOLVER.CPU_BF16 was a bool; today a string key ("auto" | "True" | "False"). yacs decodes every
    merged string with ``literal_eval`` ("True" -> True), so the value is handed over quoted.
    """
    return repr(str(value).strip().strip("'\""))


def translate_legacy_dict(loaded: Dict, source: str) -> Dict:
    """
    Rewrite the old keys of a loaded YAML config (a nested dict, ``_BASE_`` already merged) into
    today's, in place; returns it.
    """
    solver = loaded.get("SOLVER")
    if isinstance(solver, dict) and "CPU_BF16" in solver:
        solver["CPU_BF16"] = _cpu_bf16(solver["CPU_BF16"])
    model = loaded.get("MODEL")
    if not isinstance(model, dict):
        return loaded
    old = {k: model.pop(k) for k in list(LEGACY_KEYS) if k in model}
    notes = [f"MODEL.{k}" for k in old]
    if old:
        cpu = model.setdefault("CPU", {})
        cpu.update(_new_values(old))
        generator = model.get("PROPOSAL_GENERATOR")
        if isinstance(generator, dict) and generator.get("NAME") == "RPN" and _rpn_wanted(cpu):
            generator["NAME"] = "NucleusRPN"
    if "PIXEL_SIZE_UM" in model and _is_zero(model["PIXEL_SIZE_UM"]):
        model["PIXEL_SIZE_UM"] = TRAINING_DATA_MPP
        notes.append("MODEL.PIXEL_SIZE_UM 0")
    _note(source, notes)
    return loaded


def _is_zero(value) -> bool:
    try:
        return float(value) == 0
    except (TypeError, ValueError):
        return False  # not a number: the config's own type check reports it


def translate_legacy_list(cfg, opts: List) -> List:
    """
    Command-line overrides (KEY VALUE ...) for ``cfg`` with the old keys replaced by today's
    (and ``MODEL.PROPOSAL_GENERATOR.NAME NucleusRPN`` where ``cfg`` names ``RPN`` and the old
    RPN keys asked for its behaviour).
    """
    opts = list(opts)
    old, rest = {}, []
    for key, value in zip(opts[0::2], opts[1::2]):
        name = str(key)
        if name.startswith("MODEL.") and name[6:] in LEGACY_KEYS:
            old[name[6:]] = value
        elif name == "SOLVER.CPU_BF16":
            rest += [key, _cpu_bf16(value)]
        elif name == "MODEL.PIXEL_SIZE_UM" and _is_zero(value):
            rest += [key, str(TRAINING_DATA_MPP)]
            _note("command line", ["MODEL.PIXEL_SIZE_UM 0"])
        else:
            rest += [key, value]
    if not old:
        return rest
    _note("command line", [f"MODEL.{k}" for k in old])
    new = _new_values(old)
    for k, v in new.items():
        rest += [f"MODEL.CPU.{k}", str(v)]
    rpn_keys = {"RPN_NMS_THREADS", "NATIVE_ANCHOR_IOU"} & set(old)
    if rpn_keys and cfg.MODEL.PROPOSAL_GENERATOR.NAME == "RPN" and _rpn_wanted(new):
        rest += ["MODEL.PROPOSAL_GENERATOR.NAME", "NucleusRPN"]
    return rest
