# -*- coding: utf-8 -*-
"""
What a training or evaluation run (tools/train_net.py) writes into ``OUTPUT_DIR``, checked before
anything is written: :func:`check_output_dir`. Detectron2 writes ``config.yaml`` (the merged
config), ``log.txt``, ``metrics.json`` and, when training, ``last_checkpoint``, ``model_final.pth``
and ``model_<iteration>.pth`` every ``SOLVER.CHECKPOINT_PERIOD`` iterations.
"""
import glob
import os
import re
from typing import List

from ..data.datasets import extra_data_roots, resolve_data_root
from ..utils.file_io import OutputExistsError, OutputIsInputError, check_not_input, check_writable_dir

__all__ = ["RUN_FILES", "check_output_dir", "remove_earlier_run"]

#: files every run (training or --eval-only) writes into OUTPUT_DIR
RUN_FILES = ("config.yaml", "log.txt", "metrics.json", "last_checkpoint")
_CHECKPOINT_RE = re.compile(r"^model_(\d{7})\.pth$")


def _saves(cfg, name: str) -> bool:
    """Whether a training run of ``cfg`` saves a checkpoint named ``name`` (Detectron2's PeriodicCheckpointer)."""
    if name == "model_final.pth":
        return True
    m = _CHECKPOINT_RE.match(name)
    period, max_iter = int(cfg.SOLVER.CHECKPOINT_PERIOD), int(cfg.SOLVER.MAX_ITER)
    return bool(m) and (int(m.group(1)) + 1) % period == 0 and int(m.group(1)) < max_iter - 1


def check_output_dir(cfg, config_file: str = "", resume: bool = False, eval_only: bool = False,
                     overwrite: bool = False) -> List[str]:
    """
    Before anything is written, in this order:

    * no file the run writes is one of its inputs, whatever ``overwrite``: ``config.yaml`` is not
      ``config_file`` (a run's saved config given back to it), and a training run (not ``resume``)
      does not save a checkpoint over ``MODEL.WEIGHTS`` (fine-tuning from ``OUTPUT_DIR/model_final.pth``);
    * ``OUTPUT_DIR`` can be created and written;
    * ``resume`` needs a run to resume; a new training run does not go into the ``OUTPUT_DIR`` of
      an earlier one unless ``overwrite``.

    Returns:
        the earlier run's files the new run must remove when it starts (``overwrite``: its
        ``last_checkpoint`` and ``metrics.json``, which would make a later ``--resume`` continue the
        earlier run or mix its metrics in): :func:`remove_earlier_run`, once every check passed.

    Raises:
        OutputIsInputError, OutputExistsError, FileNotFoundError, NotADirectoryError,
        PermissionError: one line each.
    """
    out = str(cfg.OUTPUT_DIR)
    weights = str(cfg.MODEL.WEIGHTS)
    inputs = [config_file, weights, resolve_data_root(cfg=cfg)] + [path for _, path in extra_data_roots(cfg)]
    hint = " (it is in OUTPUT_DIR: choose another OUTPUT_DIR, or copy the file elsewhere and pass the copy)"
    try:
        check_not_input([os.path.join(out, name) for name in RUN_FILES], inputs)
    except OutputIsInputError as e:
        raise OutputIsInputError(f"{e}{hint}") from None
    in_out_dir = weights and "://" not in weights and \
        os.path.dirname(os.path.realpath(weights)) == os.path.realpath(out)
    if in_out_dir and not resume and not eval_only and _saves(cfg, os.path.basename(weights)):
        raise OutputIsInputError(f"MODEL.WEIGHTS {weights}: this training run would save its own "
                                 f"{os.path.basename(weights)} over it{hint}")
    check_writable_dir(out)
    marker = os.path.join(out, "last_checkpoint")
    if resume:
        if not os.path.isfile(marker):
            raise FileNotFoundError(
                f"--resume: OUTPUT_DIR {out!r} has no last_checkpoint to resume from (mistyped OUTPUT_DIR?); "
                "leave out --resume to start a new run"
            )
        return []
    if eval_only:
        return []
    earlier = sorted(
        os.path.basename(p)
        for p in glob.glob(os.path.join(glob.escape(out), "model_*.pth")) + [marker]
        if os.path.isfile(p)
    )
    if earlier and not overwrite:
        raise OutputExistsError(
            f"OUTPUT_DIR {out!r} holds an earlier training run ({', '.join(earlier[:3])}"
            f"{', ...' if len(earlier) > 3 else ''}); pass --resume to continue it, or --overwrite to "
            "start a new run there (its checkpoints are replaced), or choose another OUTPUT_DIR"
        )
    return [p for p in (marker, os.path.join(out, "metrics.json")) if earlier and os.path.isfile(p)]


def remove_earlier_run(files: List[str]) -> None:
    """Remove the files :func:`check_output_dir` returned (call it once every check passed)."""
    for path in files:
        if os.path.isfile(path):
            os.remove(path)
