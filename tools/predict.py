#!/usr/bin/env python
"""
Predict nuclei and write the challenge submission (answer.json / answer.zip), and optionally
overlays, QuPath GeoJSON and instance label maps.

    python tools/predict.py --config-file configs/Base-Nucleus-RCNN-FPN.yaml \\
        --weights output/model_final.pth --input datasets/raw/test_img_ids.json --zip
    python tools/predict.py --config-file ... --weights ... --input slides/ --vis-dir vis \\
        --geojson-dir qupath --labels-dir labels MODEL.ROI_HEADS.NMS_THRESH_TEST 0.4
"""
import argparse
import logging
import os
import sys

from d2_nucleus.utils.cli import check_flag_number, quiet_known_warnings, run_main


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE", help="model config (YAML)")
    p.add_argument("--weights", default=None, help="checkpoint (.pth) to load (default: MODEL.WEIGHTS of the config)")
    p.add_argument("--input", required=True,
                   help="a folder of images, one image, or a test_img_ids.json (images in test/ next to it)")
    p.add_argument("--ids", default=None, metavar="JSON",
                   help="test_img_ids.json giving the image ids of the images in the --input folder; the folder "
                   "may hold no other images unless --subset")
    p.add_argument("--subset", action="store_true",
                   help="with --ids: predict only the images it lists although the folder holds others "
                   "(they are named in a warning and the summary)")
    p.add_argument("--output", default="answer.json", help="COCO results file (default: answer.json)")
    p.add_argument("--zip", action="store_true", help="also write <output>.zip with answer.json at its top level")
    p.add_argument("--score-thresh", type=float, default=None,
                   help="keep detections scoring at least this (default: MODEL.ROI_HEADS.SCORE_THRESH_TEST)")
    p.add_argument("--max-dets", type=int, default=None,
                   help="at most this many detections per image (default: TEST.DETECTIONS_PER_IMAGE)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: flips (and scales) of TEST.AUG, masks averaged")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (with --tta: augmented copies)")
    p.add_argument("--vis-dir", default=None, help="write <image>.png overlays (contours and count) here")
    p.add_argument("--geojson-dir", default=None, help="write <image>.geojson for QuPath here")
    p.add_argument("--labels-dir", default=None, help="write instance label maps (0 = background, 1..N) here")
    p.add_argument("--label-format", choices=("png", "tiff"), default="png",
                   help="label maps as 16-bit PNG (TIFF 32-bit beyond 65535 nuclei) or TIFF (default: png)")
    p.add_argument("--export-score-thresh", type=float, default=None,
                   help="score threshold of the overlays, GeoJSON and label maps "
                   "(default: TEST.LABEL_MAP_SCORE_THRESH); answer.json keeps all detections")
    p.add_argument("--measurements", default=None, metavar="DIR",
                   help="write per-nucleus measurements here: <image>.parquet, <image>.summary.json, <image>.png "
                   "(and into the GeoJSON with --geojson-dir)")
    p.add_argument("--measurements-format", choices=("parquet", "csv"), default="parquet",
                   help="csv: also write <image>.csv next to the Parquet table (default: parquet)")
    p.add_argument("--mpp", type=float, default=None,
                   help="micrometres per pixel of the images (default: the model's, MODEL.PIXEL_SIZE_UM): images "
                   "at another resolution are resized to the model's for detection (outputs stay in their "
                   "pixels), and the um / um^2 measurements use it")
    p.add_argument("--stain", choices=("ruifrok", "macenko"), default="ruifrok",
                   help="H&E stain vectors of the colour deconvolution: fixed Ruifrok-Johnston, "
                   "or estimated per image by Macenko's method (default: ruifrok)")
    p.add_argument("--types", default=None, metavar="FILE",
                   help="nucleus type classifier (tools/train_types.py) applied to every exported nucleus: "
                   "type and probability columns, per-type summary, QuPath classes, type-coloured overlays "
                   "(default: TYPES.CLASSIFIER; answer.json keeps one class)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images and list them at the end")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                   help="config overrides as KEY VALUE pairs, e.g. MODEL.ROI_HEADS.NMS_THRESH_TEST 0.4")
    return p


def setup_cfg(args):
    from d2_nucleus.config import get_inference_cfg

    cfg = get_inference_cfg(args.config_file, args.opts, args.weights, args.device)
    if args.score_thresh is not None:
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = args.score_thresh
    if args.max_dets is not None:
        cfg.TEST.DETECTIONS_PER_IMAGE = args.max_dets
    if args.types is not None:
        cfg.TYPES.CLASSIFIER = args.types
    cfg.freeze()
    return cfg


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # torch and Detectron2 are imported only now: --help and argument errors return at once.
    quiet_known_warnings()
    from d2_nucleus.config import model_mpp
    from d2_nucleus.engine import NucleusPredictor, check_outputs, list_inputs, run_prediction, unlisted_images
    from d2_nucleus.modeling.cpu.malloc import tune_process
    from d2_nucleus.types.outputs import load_for_model, type_predictor
    from d2_nucleus.utils.file_io import output_transaction

    try:
        check_flag_number(args.mpp, "--mpp", zero_ok=True)
        if args.subset and not args.ids:
            raise ValueError("--subset goes with --ids (the images it lists out of the --input folder)")
        cfg = setup_cfg(args)  # one-line ConfigError for a missing file, a bad key or odd overrides
        items = list_inputs(args.input, args.ids, allow_missing=args.skip_bad, subset=args.subset)
        left_out = unlisted_images(args.input, items) if args.ids else []
        zip_path = os.path.splitext(args.output)[0] + ".zip" if args.zip else None
        measurements = None
        if args.measurements:
            from d2_nucleus.measurements.outputs import MeasurementWriter

            mpp = args.mpp if args.mpp is not None else model_mpp(cfg)
            measurements = MeasurementWriter(args.measurements, csv=args.measurements_format == "csv",
                                             mpp=mpp, stain=args.stain)
        # Before loading the model: fail fast on outputs that are inputs (whatever --overwrite), that
        # exist or cannot be written.
        check_outputs(items, args.output, zip_path, args.vis_dir, args.geojson_dir, args.labels_dir,
                      args.label_format, args.overwrite, measurements,
                      inputs=[args.input, args.ids, args.config_file, cfg.MODEL.WEIGHTS, cfg.TYPES.CLASSIFIER])
        classifier, cfg = load_for_model(cfg, args.tta)  # one-line error for a bad classifier file
        tune_process(cfg)
        predictor = NucleusPredictor(cfg, tta=args.tta, batch_size=args.batch_size)
        types = type_predictor(classifier, predictor.model, cfg, args.mpp) if classifier else None
        export_thresh = args.export_score_thresh
        if export_thresh is None:
            export_thresh = cfg.TEST.LABEL_MAP_SCORE_THRESH
        # All outputs (per-image files, answer.json/.zip) appear together at the end, or none.
        with output_transaction():
            summary = run_prediction(
                predictor,
                items,
                output=args.output,
                zip_output=zip_path,
                vis_dir=args.vis_dir,
                geojson_dir=args.geojson_dir,
                labels_dir=args.labels_dir,
                label_format=args.label_format,
                export_score_thresh=export_thresh,
                skip_bad=args.skip_bad,
                overwrite=args.overwrite,
                progress=not args.quiet,
                measurements=measurements,
                mpp=args.mpp,
                left_out=left_out,
                types=types,
            )
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        print(f"predict: error: {e}", file=sys.stderr)
        return 2
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "predict", "nothing was written (outputs appear together at the end)"))
