# -*- coding: utf-8 -*-
"""
Prediction on image files: the pipeline behind ``tools/predict.py``.

* :func:`list_inputs` turns a folder, one image, or a ``test_img_ids.json`` into
  :class:`ImageItem` s (file + COCO image id);
* :func:`read_image` reads an image like training does (Detectron2's ``read_image`` in
  ``cfg.INPUT.FORMAT``), converting grey / alpha / 16-bit images with a warning;
* :class:`NucleusPredictor` builds the model, loads its weights safely and runs it (optionally
  with test-time augmentation) on batches of images at their native resolution;
* :func:`run_prediction` predicts a list of images and writes answer.json (+ answer.zip),
  overlays, QuPath GeoJSON and label maps, each file atomically.
"""
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

import detectron2.data.transforms as T
from detectron2.data import detection_utils
from detectron2.modeling import build_model
from detectron2.structures import Instances

from ..compat import NucleusCheckpointer, WeightsNotFoundError
from ..data.dataset_mapper import build_nucleus_augmentation
from ..utils.autocast import cpu_autocast
from ..data.raw import is_ignored_entry
from ..export import (
    check_writable,
    draw_overlay,
    instances_to_coco_json,
    label_map_path,
    rles_to_geojson,
    write_answer,
    write_geojson,
    write_label_map,
    write_overlay,
)
from ..modeling import NucleusRCNNWithTTA
from ..utils.label_map import rles_to_label_map
from ..utils.rle import rle_counts

__all__ = [
    "BadImageError",
    "ImageItem",
    "IMAGE_EXTENSIONS",
    "NucleusPredictor",
    "PredictionSummary",
    "check_outputs",
    "list_inputs",
    "read_image",
    "run_prediction",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class BadImageError(ValueError):
    """An input image cannot be read or is not what its description says."""


@dataclass
class ImageItem:
    """One input image: its file, the COCO image id it gets, and its expected size if known."""

    path: str
    image_id: int
    height: Optional[int] = None
    width: Optional[int] = None

    @property
    def stem(self) -> str:
        return os.path.splitext(os.path.basename(self.path))[0]


# -------------------------------------------------------------------------------------------------
# Inputs
# -------------------------------------------------------------------------------------------------
def _load_ids(ids_path: str) -> List[Dict]:
    """Entries of a test_img_ids.json: [{"file_name", "id", "height", "width"}, ...]."""
    if not os.path.isfile(ids_path):
        raise FileNotFoundError(f"image id file {ids_path!r} does not exist")
    try:
        with open(ids_path) as f:
            entries = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{ids_path}: not a readable JSON file ({e})") from e
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and "file_name" in e and "id" in e for e in entries
    ):
        raise ValueError(f"{ids_path}: expected a list of {{'file_name', 'id', 'height', 'width'}}")
    ids = [e["id"] for e in entries]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{ids_path}: image ids are not unique")
    return entries


def list_inputs(input_path: str, ids_path: Optional[str] = None, allow_missing: bool = False) -> List[ImageItem]:
    """
    The images to predict.

    Args:
        input_path: a folder of images, one image, or a ``test_img_ids.json``. For the latter,
            images are looked up in ``test/`` next to it (raw layout), in
            ``nucleus_data/test/`` (tools/prepare_data.py's layout), then next to it.
        ids_path: a ``test_img_ids.json`` whose ``file_name`` s are looked up in ``input_path``
            (a folder); the image ids come from it. Without ids, images get ids 1, 2, ... in
            the sorted order of their file names (hidden files and Jupyter "-checkpoint"
            copies are ignored).
        allow_missing: return images the id file names but which do not exist (their reading
            fails later) instead of raising.

    Raises:
        FileNotFoundError: the input does not exist, or the id file names an absent image.
        ValueError: no images, or a malformed id file.
    """
    if not os.path.exists(input_path):
        raise FileNotFoundError(f"input {input_path!r} does not exist")
    if ids_path is None and os.path.isfile(input_path) and input_path.lower().endswith(".json"):
        ids_path = input_path
        root = os.path.dirname(os.path.abspath(input_path))
        # raw layout (tools/make_synthetic.py, the download), prepared layout, or next to it
        folders = [os.path.join(root, "test"), os.path.join(root, "nucleus_data", "test"), root]
    elif ids_path is not None:
        if not os.path.isdir(input_path):
            raise ValueError(f"with --ids, the input must be the folder of the images, got {input_path!r}")
        folders = [input_path]
    else:
        folders = None

    if ids_path is not None:
        items = []
        for entry in _load_ids(ids_path):
            name = str(entry["file_name"])
            candidates = [os.path.join(d, name) for d in folders]
            path = next((p for p in candidates if os.path.isfile(p)), None)
            if path is None:
                if not allow_missing:
                    raise FileNotFoundError(
                        f"{ids_path} names {name!r}, which is not in {' or '.join(map(repr, folders))}"
                    )
                path = candidates[0]
            items.append(ImageItem(path, int(entry["id"]), entry.get("height"), entry.get("width")))
        return items

    if os.path.isfile(input_path):
        return [ImageItem(input_path, 1)]
    names = sorted(
        n
        for n in os.listdir(input_path)
        if n.lower().endswith(IMAGE_EXTENSIONS)
        and not is_ignored_entry(n)  # hidden files, Jupyter "-checkpoint" copies
        and os.path.isfile(os.path.join(input_path, n))
    )
    if not names:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {input_path!r}")
    return [ImageItem(os.path.join(input_path, n), i + 1) for i, n in enumerate(names)]


def read_image(path: str, format: str = "BGR") -> np.ndarray:
    """
    Read an image as training does (``detectron2.data.detection_utils.read_image``), as an
    H x W x 3 uint8 array in ``format`` ("BGR" or "RGB"). Grey, palette, alpha and 16-bit
    images are converted to 8-bit colour with a warning.

    Raises:
        BadImageError: the file is missing or not a readable image (the message names it).
    """
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode.startswith("I") or mode == "F":  # 16/32-bit integer or float grey
                grey = np.asarray(im, dtype=np.float64)
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImageError(f"{path}: cannot read image ({e})") from e
    if mode.startswith("I") or mode == "F":
        peak = 65535.0 if mode.startswith("I;16") else max(float(grey.max()), 1.0)
        warnings.warn(f"{path}: {mode} grey image scaled to 8 bits and converted to 3 channels")
        grey = np.clip(grey / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        image = np.repeat(grey[:, :, None], 3, axis=2)
        return image[:, :, ::-1].copy() if format == "BGR" else image
    if mode != "RGB":
        what = {"RGBA": "alpha channel dropped", "LA": "grey + alpha: alpha dropped", "L": "grey"}
        warnings.warn(f"{path}: {mode} image converted to RGB ({what.get(mode, 'converted')})")
    try:
        image = detection_utils.read_image(path, format=format)
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImageError(f"{path}: cannot read image ({e})") from e
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise BadImageError(f"{path}: unsupported image of shape {image.shape}")
    return image


# -------------------------------------------------------------------------------------------------
# Model
# -------------------------------------------------------------------------------------------------
class NucleusPredictor:
    """
    Run a d2_nucleus model on images at their native resolution (or whatever the test-time
    transform of the config says: ``build_augmentation(cfg, is_train=False)``, as in evaluation).

    Outputs are :class:`Instances` on CPU with ``pred_boxes``, ``scores``, ``pred_classes`` and
    ``pred_rles`` (see :func:`d2_nucleus.modeling.nucleus_postprocess`).
    """

    def __init__(self, cfg, tta: bool = False, batch_size: int = 1):
        """
        Args:
            cfg: a d2_nucleus config; ``MODEL.WEIGHTS`` must be a checkpoint file.
            tta: use :class:`NucleusRCNNWithTTA` (``cfg.TEST.AUG``).
            batch_size: images per forward pass (with TTA: augmented copies per pass).

        Raises:
            WeightsNotFoundError: ``MODEL.WEIGHTS`` is empty or not a file.
        """
        self.cfg = cfg = cfg.clone()
        if cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN":
            # NucleusRCNN is GeneralizedRCNN with memory-light post-processing (same weights).
            cfg.defrost()
            cfg.MODEL.META_ARCHITECTURE = "NucleusRCNN"
        weights = cfg.MODEL.WEIGHTS
        if not weights:
            raise WeightsNotFoundError(
                "no model weights: pass --weights (or MODEL.WEIGHTS) with a checkpoint, "
                "e.g. output/<run>/model_final.pth from tools/train_net.py"
            )
        if "://" not in weights and not os.path.isfile(weights):
            raise WeightsNotFoundError(
                f"model weights {weights!r} not found; train a model with tools/train_net.py "
                "and pass its model_final.pth / model_best.pth with --weights (or MODEL.WEIGHTS)"
            )
        self.model = build_model(cfg)
        self.model.eval()
        NucleusCheckpointer(self.model).load(weights)
        self.augmentations = T.AugmentationList(build_nucleus_augmentation(cfg, is_train=False))
        self.input_format = cfg.INPUT.FORMAT
        self.batch_size = max(1, int(batch_size))
        self.tta = NucleusRCNNWithTTA(cfg, self.model, batch_size=self.batch_size) if tta else None

    def __call__(self, images: Sequence[np.ndarray]) -> List[Instances]:
        """
        Args:
            images: H x W x 3 uint8 arrays in ``cfg.INPUT.FORMAT`` (see :func:`read_image`).

        Returns:
            one :class:`Instances` per image, at the image's size.
        """
        inputs = []
        for image in images:
            height, width = image.shape[:2]
            aug_input = T.AugInput(image)
            self.augmentations(aug_input)
            tensor = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
            inputs.append({"image": tensor, "height": height, "width": width})
        outputs = []
        with torch.no_grad(), cpu_autocast(self.cfg):
            if self.tta is not None:
                outputs = self.tta(inputs)
            else:
                for i in range(0, len(inputs), self.batch_size):
                    outputs.extend(self.model(inputs[i : i + self.batch_size]))
        results = [o["instances"].to("cpu") for o in outputs]
        for r in results:
            if not r.has("pred_rles"):
                raise RuntimeError(
                    f"{self.cfg.MODEL.META_ARCHITECTURE} outputs no pred_rles; use "
                    "MODEL.META_ARCHITECTURE NucleusRCNN"
                )
        return results


# -------------------------------------------------------------------------------------------------
# The whole run
# -------------------------------------------------------------------------------------------------
@dataclass
class PredictionSummary:
    num_images: int = 0
    num_detections: int = 0
    bad_images: List[str] = field(default_factory=list)
    seconds: float = 0.0
    written: List[str] = field(default_factory=list)
    files_per_folder: Dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        per_image = self.num_detections / max(self.num_images, 1)
        lines = [
            f"Predicted {self.num_images} image(s) in {self.seconds:.1f} s "
            f"({self.seconds / max(self.num_images, 1):.2f} s/image): "
            f"{self.num_detections} detections ({per_image:.1f} per image).",
        ]
        if self.bad_images:
            lines.append(f"Skipped {len(self.bad_images)} unreadable image(s):")
            lines += [f"  {m}" for m in self.bad_images]
        lines += [f"Wrote {n} file(s) to {d}" for d, n in self.files_per_folder.items()]
        lines += [f"Wrote {p}" for p in self.written]
        return "\n".join(lines)


def _side_outputs(items, vis_dir, geojson_dir, labels_dir):
    """Output paths per image (label maps: without extension, chosen by the number of labels)."""
    stems = [it.stem for it in items]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})
        raise ValueError(f"input images share file names {dup}; per-image outputs would collide")
    paths = {}
    for it in items:
        paths[it.image_id] = {
            "vis": os.path.join(vis_dir, it.stem + ".png") if vis_dir else None,
            "geojson": os.path.join(geojson_dir, it.stem + ".geojson") if geojson_dir else None,
            "labels": os.path.join(labels_dir, it.stem) if labels_dir else None,
        }
    return paths


def check_outputs(
    items: Sequence[ImageItem],
    output: Optional[str] = None,
    zip_output: Optional[str] = None,
    vis_dir: Optional[str] = None,
    geojson_dir: Optional[str] = None,
    labels_dir: Optional[str] = None,
    label_format: str = "png",
    overwrite: bool = False,
) -> Dict[int, Dict[str, Optional[str]]]:
    """
    Check, before any prediction, that every output can be written: folders creatable and
    writable, no existing file unless ``overwrite``, no two images with the same output name.

    Returns:
        per image id: {"vis", "geojson", "labels"} paths (labels without extension) or None.
    """
    if label_format not in ("png", "tiff"):
        raise ValueError(f"label format must be 'png' or 'tiff', got {label_format!r}")
    for path in (output, zip_output):
        if path:
            check_writable(path, overwrite=overwrite)
    side = _side_outputs(items, vis_dir, geojson_dir, labels_dir)
    for paths in side.values():
        for key, path in paths.items():
            if path is None:
                continue
            for candidate in (path + ".png", path + ".tif") if key == "labels" else (path,):
                check_writable(candidate, overwrite=overwrite)
    return side


def run_prediction(
    predictor: NucleusPredictor,
    items: Sequence[ImageItem],
    output: Optional[str] = "answer.json",
    zip_output: Optional[str] = None,
    vis_dir: Optional[str] = None,
    geojson_dir: Optional[str] = None,
    labels_dir: Optional[str] = None,
    label_format: str = "png",
    export_score_thresh: float = 0.5,
    skip_bad: bool = False,
    overwrite: bool = False,
    category_ids: Optional[Sequence[int]] = None,
    progress: bool = True,
    measurements=None,
) -> PredictionSummary:
    """
    Predict ``items`` and write the results.

    Args:
        predictor: the model.
        items: images (see :func:`list_inputs`).
        output: answer.json path (COCO results of all detections); None: do not write it.
        zip_output: also write this zip with ``answer.json`` inside.
        vis_dir, geojson_dir, labels_dir: per-image overlays (``<stem>.png``), QuPath GeoJSON
            (``<stem>.geojson``), and label maps (``<stem>.png`` 16-bit, or ``<stem>.tif``
            with ``label_format="tiff"`` or more than 65535 instances); these hold detections
            scoring >= ``export_score_thresh`` with non-empty masks.
        skip_bad: skip unreadable images (listed in the summary) instead of failing.
        overwrite: replace existing output files.
        category_ids: dataset category id per class index (default: class index + 1).
        measurements: a :class:`d2_nucleus.measurements.outputs.MeasurementWriter`: per-image
            measurement table, summary and figure of the exported detections (also put into
            the GeoJSON's measurements).

    Every file is complete or absent: each is written to a temporary file and renamed, and
    answer.json / answer.zip are written only after all images succeed. Existing outputs
    (without ``overwrite``) and unwritable folders are reported before any prediction.
    """
    from tqdm import tqdm

    side = check_outputs(items, output, zip_output, vis_dir, geojson_dir, labels_dir, label_format, overwrite)
    if measurements is not None:
        measurements.check([it.stem for it in items], overwrite)
    if category_ids is None:
        category_ids = list(range(1, predictor.cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1))

    summary = PredictionSummary()
    start = time.perf_counter()
    results: List[Dict] = []
    batch_size = 1 if predictor.tta is not None else predictor.batch_size
    bar = tqdm(total=len(items), unit="img", desc="predict", disable=not progress)
    for first in range(0, len(items), batch_size):
        batch, images = [], []
        for item in items[first : first + batch_size]:
            try:
                image = read_image(item.path, predictor.input_format)
                if item.height is not None and item.width is not None:
                    if image.shape[:2] != (int(item.height), int(item.width)):
                        raise BadImageError(
                            f"{item.path}: image is {image.shape[0]}x{image.shape[1]}, the id file "
                            f"says {item.height}x{item.width}"
                        )
            except BadImageError as e:
                if not skip_bad:
                    raise
                logger.warning("Skipping %s", e)
                summary.bad_images.append(str(e))
                bar.update(1)
                continue
            batch.append(item)
            images.append(image)
        if not batch:
            continue
        for item, image, instances in zip(batch, images, predictor(images)):
            results.extend(instances_to_coco_json(instances, item.image_id, category_ids))
            summary.num_images += 1
            summary.num_detections += len(instances)
            _write_side_outputs(item, image, instances, side[item.image_id], predictor.input_format,
                                export_score_thresh, label_format, overwrite, summary, measurements)
            bar.update(1)
    bar.close()
    if summary.bad_images and summary.num_images == 0:
        raise BadImageError("no input image could be read:\n  " + "\n  ".join(summary.bad_images))
    if output:
        write_answer(results, output, zip_output, overwrite=overwrite)
        summary.written += [p for p in (output, zip_output) if p]
    summary.seconds = time.perf_counter() - start
    return summary


def _write_side_outputs(item, image, instances, paths, input_format, score_thresh, label_format,
                        overwrite, summary, measurements=None):
    """Overlay, GeoJSON, label map and measurements of one image's detections scoring >= score_thresh."""
    if not any(paths.values()) and measurements is None:
        return
    height, width = image.shape[:2]
    keep = (instances.scores >= score_thresh).nonzero().flatten().tolist()
    rles = [instances.pred_rles[i] for i in keep]
    scores = [float(instances.scores[i]) for i in keep]
    # Drop empty masks: they have no outline and no label.
    nonempty = [i for i, rle in enumerate(rles) if rle_counts(rle)[1::2].sum() > 0]
    rles, scores = [rles[i] for i in nonempty], [scores[i] for i in nonempty]
    label_map = None
    if paths["vis"] or paths["labels"]:
        label_map = rles_to_label_map(rles, height, width, scores=scores)
    written, qupath = [], None
    if measurements is not None:
        rgb = image[:, :, ::-1] if input_format == "BGR" else image
        measured = measurements.write(item.stem, rgb, rles, scores, os.path.basename(item.path), overwrite)
        written += measured["written"]
        qupath = measured["qupath"]
    if paths["vis"]:
        rgb = image[:, :, ::-1] if input_format == "BGR" else image
        write_overlay(draw_overlay(rgb, label_map, count=len(rles)), paths["vis"], overwrite=overwrite)
        written.append(paths["vis"])
    if paths["geojson"]:
        write_geojson(rles_to_geojson(rles, scores, measurements=qupath), paths["geojson"], overwrite=overwrite)
        written.append(paths["geojson"])
    if paths["labels"]:
        path = label_map_path(paths["labels"], len(rles), label_format)
        write_label_map(label_map, path, overwrite=overwrite)
        written.append(path)
    for path in written:
        folder = os.path.dirname(path)
        summary.files_per_folder[folder] = summary.files_per_folder.get(folder, 0) + 1
