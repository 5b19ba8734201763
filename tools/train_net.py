#!/usr/bin/env python
"""
Train or evaluate a d2_nucleus model.

    python tools/train_net.py --config-file configs/mask_rcnn_R_50_FPN_3x.yaml --data-root datasets/nucleus
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_best.pth
    python tools/train_net.py --config-file ... --resume          # continue the last checkpoint
    python tools/train_net.py --config-file ... --overwrite       # new run into an OUTPUT_DIR that has one
    python tools/train_net.py --config-file ... --num-gpus 8      # multi-GPU (torch DDP)

Bad input (config, overrides, weights, data, OUTPUT_DIR) stops the run before training with a
one-line error naming the file and exit status 2; a loss that becomes NaN stops it with one line
naming the iteration (exit status 1); Ctrl-C with one line (exit status 130).
"""
import sys

import d2_nucleus  # noqa: F401  (first: its runtime fixes and warning filters apply to Detectron2's imports)
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from d2_nucleus.checkpoint import WeightsError, check_weights_path
from d2_nucleus.config import ConfigError, get_nucleus_cfg
from d2_nucleus.data.datasets import prepare_nucleus_datasets
from d2_nucleus.data.raw import RawDataError
from d2_nucleus.engine import NucleusTrainer
from d2_nucleus.engine.output_dir import check_output_dir, remove_earlier_run
from d2_nucleus.engine.trainer import TrainingDiverged
from d2_nucleus.modeling.cpu.malloc import tune_process
from d2_nucleus.utils.cli import error_line, run_main
from d2_nucleus.utils.file_io import OutputIsInputError

PROG = "train_net"
# Errors of the user's input; anything else keeps its traceback (a bug).
USER_ERRORS = (ConfigError, WeightsError, OSError, KeyError, RawDataError, OutputIsInputError)


def setup(args):
    cfg = get_nucleus_cfg(args.config_file, args.opts, data_root=args.data_root)
    cfg.freeze()
    # OUTPUT_DIR: no output replaces an input (whatever --overwrite), writable, an earlier run's rules
    earlier = check_output_dir(cfg, args.config_file, args.resume, args.eval_only, args.overwrite)
    # Data before anything is written: a missing or malformed annotation file, a missing image or
    # one outside its image folder stops the run now (one line naming the file).
    prepare_nucleus_datasets(cfg, list(cfg.DATASETS.TEST) + ([] if args.eval_only else list(cfg.DATASETS.TRAIN)))
    if cfg.MODEL.WEIGHTS and not args.resume:  # a folder or a missing file, before anything is written
        check_weights_path(cfg.MODEL.WEIGHTS)
    if comm.is_main_process():
        remove_earlier_run(earlier)  # --overwrite: only now that every check passed
    default_setup(cfg, args)
    tune_process(cfg)  # glibc malloc thresholds: process-wide, so set by the entry point
    # d2_nucleus's own INFO messages (e.g. "Restored optimizer state") in the console and log.txt
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="d2_nucleus")
    return cfg


def _fail(e):
    print(error_line(PROG, e), file=sys.stderr)
    sys.exit(2)


def main(args):
    try:
        cfg = setup(args)
        if args.eval_only:
            return NucleusTrainer.eval_only(cfg, resume=args.resume)
        trainer = NucleusTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
    except USER_ERRORS as e:
        _fail(e)
    try:
        return trainer.train()
    except TrainingDiverged as e:  # a NaN / infinite loss: one line naming the iteration
        print(error_line(PROG, e), file=sys.stderr)
        sys.exit(1)


def get_parser():
    parser = default_argument_parser()
    parser.add_argument(
        "--data-root",
        default=None,
        help="prepared dataset root (tools/prepare_data.py --out); overrides NUCLEUS.DATA_ROOT and "
        "$D2_NUCLEUS_DATA (default: datasets/nucleus)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new training run in an OUTPUT_DIR that holds an earlier one (its checkpoints are "
        "replaced as the new ones are saved); without it, such an OUTPUT_DIR is refused unless --resume",
    )
    return parser


if __name__ == "__main__":
    args = get_parser().parse_args()
    print("Command Line Args:", args)
    sys.exit(run_main(lambda: launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    ), PROG, "the checkpoints saved so far are kept; --resume continues from the last one"))
