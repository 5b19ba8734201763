# -*- coding: utf-8 -*-
"""
A prediction run: read each image (:func:`d2_nucleus.data.image_io.read_image`), predict it, and
write answer.json (+ answer.zip) with the evaluator's COCO converter, and the per-image overlays,
QuPath GeoJSON and label maps (:mod:`d2_nucleus.export.image_outputs`), each file atomically.
"""
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from ..data.image_io import BadImageError, read_image
from ..evaluation.coco_results import instances_to_coco_json
from ..export.answer import write_answer
from ..export.image_outputs import image_output_files, image_output_paths, write_image_outputs
from ..utils.file_io import check_not_input, check_writable
from .inputs import ImageItem, name_list

__all__ = ["PredictionSummary", "check_outputs", "run_prediction"]

logger = logging.getLogger(__name__)


@dataclass
class PredictionSummary:
    num_images: int = 0
    num_detections: int = 0
    bad_images: List[str] = field(default_factory=list)
    capped_images: List[str] = field(default_factory=list)
    seconds: float = 0.0
    written: List[str] = field(default_factory=list)
    files_per_folder: Dict[str, int] = field(default_factory=dict)
    left_out: List[str] = field(default_factory=list)  # images of the input folder not predicted (--subset)

    def __str__(self) -> str:
        per_image = self.num_detections / max(self.num_images, 1)
        lines = [
            f"Predicted {self.num_images} image(s) in {self.seconds:.1f} s "
            f"({self.seconds / max(self.num_images, 1):.2f} s/image): "
            f"{self.num_detections} detections ({per_image:.1f} per image).",
        ]
        if self.capped_images:
            lines.append(f"{len(self.capped_images)} image(s) reached TEST.DETECTIONS_PER_IMAGE "
                         "(--max-dets); raise it to keep more detections.")
        if self.left_out:
            lines.append(f"Left out {len(self.left_out)} image(s) of the input folder that --ids does not list "
                         f"(--subset): {name_list(self.left_out)}")
        if self.bad_images:
            lines.append(f"Skipped {len(self.bad_images)} unreadable image(s):")
            lines += [f"  {m}" for m in self.bad_images]
        lines += [f"Wrote {n} file(s) to {d}" for d, n in self.files_per_folder.items()]
        lines += [f"Wrote {p}" for p in self.written]
        return "\n".join(lines)


def check_outputs(
    items: Sequence[ImageItem],
    output: Optional[str] = None,
    zip_output: Optional[str] = None,
    vis_dir: Optional[str] = None,
    geojson_dir: Optional[str] = None,
    labels_dir: Optional[str] = None,
    label_format: str = "png",
    overwrite: bool = False,
    measurements=None,
    inputs: Sequence[str] = (),
) -> Dict[int, Dict[str, Optional[str]]]:
    """
    Check, before any prediction, that every output can be written: no output is an input (the
    images of ``items``, ``inputs``: the other files the run reads) nor another output, whatever
    ``overwrite`` (:func:`~d2_nucleus.utils.file_io.check_not_input`); folders creatable and
    writable, no existing file unless ``overwrite``, no two images with the same output name.
    ``measurements``: the :class:`~d2_nucleus.measurements.outputs.MeasurementWriter`, if any.

    Returns:
        per image id: {"vis", "geojson", "labels"} paths (labels without extension) or None.
    """
    stems = {it.image_id: it.stem for it in items}
    if len(stems) != len(items):
        raise ValueError("input images share image ids")
    side = image_output_paths(stems, vis_dir, geojson_dir, labels_dir, label_format, check=False)
    files = [output, zip_output] + image_output_files(side)
    if measurements is not None:
        files += [p for it in items for p in measurements.paths(it.stem).values()]
    check_not_input(files, [it.path for it in items] + list(inputs))
    for path in filter(None, files):
        check_writable(path, overwrite=overwrite)
    return side


def run_prediction(
    predictor,
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
    mpp: Optional[float] = None,
    left_out: Sequence[str] = (),
    types=None,
) -> PredictionSummary:
    """
    Predict ``items`` and write the results.

    Args:
        predictor: the model (:class:`NucleusPredictor`).
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
        mpp: the images' resolution in um/px (None: the model's); images at another resolution
            are resized to the model's for detection, outputs stay in their pixels.
        left_out: images of the input folder not in ``items`` (``--ids`` with ``--subset``),
            named in the summary.
        types: a :class:`d2_nucleus.types.outputs.TypePredictor`: a nucleus type for every
            exported detection, in the table, summary, figure, GeoJSON and overlay (see
            :func:`write_image_outputs`); answer.json keeps the model's single class.

    Every file is complete or absent: each is written to a temporary file and renamed, and
    answer.json / answer.zip are written only after all images succeed. Existing outputs
    (without ``overwrite``) and unwritable folders are reported before any prediction. An image
    whose detections reach ``TEST.DETECTIONS_PER_IMAGE`` is named in a one-line warning.
    """
    from tqdm import tqdm

    side = check_outputs(items, output, zip_output, vis_dir, geojson_dir, labels_dir, label_format, overwrite,
                         measurements)
    if category_ids is None:
        category_ids = list(range(1, predictor.cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1))
    cap = int(predictor.cfg.TEST.DETECTIONS_PER_IMAGE)

    summary = PredictionSummary(left_out=list(left_out))
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
        for item, image, instances in zip(batch, images, predictor(images, mpp=mpp)):
            if len(instances) >= cap:
                logger.warning(
                    "%s: %d detections, the TEST.DETECTIONS_PER_IMAGE cap (--max-dets); more nuclei "
                    "may be missed", item.path, len(instances),
                )
                summary.capped_images.append(item.path)
            results.extend(instances_to_coco_json(instances, item.image_id, category_ids))
            summary.num_images += 1
            summary.num_detections += len(instances)
            rgb = image[:, :, ::-1] if predictor.input_format == "BGR" else image
            written = write_image_outputs(
                rgb, instances.pred_rles, instances.scores.tolist(), side[item.image_id],
                export_score_thresh, label_format, overwrite,
                measurements=measurements, stem=item.stem, image_name=os.path.basename(item.path),
                min_visible=float(predictor.cfg.TEST.LABEL_MAP_MIN_VISIBLE),
                types=types, model_features=types.model_features(instances) if types is not None else None,
            )
            for path in written:
                folder = os.path.dirname(path)
                summary.files_per_folder[folder] = summary.files_per_folder.get(folder, 0) + 1
            bar.update(1)
    bar.close()
    if summary.bad_images and summary.num_images == 0:
        raise BadImageError("no input image could be read:\n  " + "\n  ".join(summary.bad_images))
    if output:
        write_answer(results, output, zip_output, overwrite=overwrite)
        summary.written += [p for p in (output, zip_output) if p]
    summary.seconds = time.perf_counter() - start
    return summary
