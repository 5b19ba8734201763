#!/usr/bin/env python
"""
Train or evaluate a d2_nucleus model.

    python tools/train_net.py --config-file configs/mask_rcnn_R_50_FPN_3x.yaml --data-root datasets/nucleus
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_best.pth
    python tools/train_net.py --config-file ... --resume          # continue the last checkpoint
    python tools/train_net.py --config-file ... --num-gpus 8      # multi-GPU (torch DDP)
"""
from detectron2.engine import default_argument_parser, default_setup, launch

from d2_nucleus.config import get_nucleus_cfg
from d2_nucleus.engine import NucleusTrainer


def setup(args):
    cfg = get_nucleus_cfg(args.config_file, args.opts, data_root=args.data_root)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        return NucleusTrainer.eval_only(cfg, resume=args.resume)
    trainer = NucleusTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def get_parser():
    parser = default_argument_parser()
    parser.add_argument(
        "--data-root",
        default=None,
        help="prepared dataset root (tools/prepare_data.py --out); overrides NUCLEUS.DATA_ROOT and "
        "$D2_NUCLEUS_DATA (default: datasets/nucleus)",
    )
    return parser


if __name__ == "__main__":
    args = get_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
