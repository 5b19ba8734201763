# -*- coding: utf-8 -*-
"""
Whole-slide segmentation: the pipeline behind ``tools/segment_slides.py``.

For each slide: open it (:mod:`.readers`), choose the pyramid level for the model's resolution
and lay tiles over it (:mod:`.tiling`), find tissue on a thumbnail (:mod:`.tissue`), run the
model on the tissue tiles in batches while a loader thread reads the next ones, keep the nuclei
each tile owns and store them as the tile's done record (:mod:`.stitching`, :mod:`.work`), then
stream the records into the outputs, in level-0 pixel coordinates:

* ``<slide>.geojson``: QuPath detections (class "Nucleus", the score as a measurement);
* ``<slide>.parquet`` (and ``<slide>.csv`` on request): one row per nucleus
  (:mod:`d2_nucleus.export.tables`);
* ``<slide>.overview.png``: thumbnail, tissue outline, nucleus density;
* ``<slide>.measurements.png``: distributions of the nuclei's measurements (with measurements on,
  ``SLIDE.MEASUREMENTS.ENABLED``; they are also table columns and GeoJSON measurements, see
  :mod:`.measure`);
* ``<slide>.summary.json``: resolution, level, tissue area, counts, density, times, hashes, and the
  median / IQR of each measurement. It is written last: a slide with a summary is complete.

With a type classifier (``TYPES.CLASSIFIER``, :mod:`.types`) every nucleus also gets a type: the
table's ``type`` and ``prob_<type>`` columns, QuPath's classification (name and colour), per-type
counts, fractions and densities per mm^2 of tissue in the summary, and both figures by type.

Memory is bounded by a batch of tiles and two rows of seam nuclei, whatever the slide's size.

The settings come from the config (``cfg.SLIDE``, :mod:`d2_nucleus.config.slide`); the CLI flags
map onto it in one place (:mod:`.options`). Around this module: the slides and their names
(:mod:`.inputs`, :mod:`.outputs`), the loader thread (:mod:`.prefetch`), the outputs' writers
(:mod:`.writers`) and the multi-slide loop with its per-slide error rule (:mod:`.runner`).
"""
import hashlib
import logging
import os
import time
from typing import Dict, Optional

import numpy as np

from ..config import model_mpp
from ..export.classes import class_count_summary
from ..measurements.stain import STAIN_METHODS
from ..utils.file_io import atomic_write_json, check_writable
from .inputs import file_sha256, slide_stem, tissue_mask_for
from .measure import measure_tile, slide_stain_matrix
from .outputs import SlideOutputs, check_slide_outputs
from .overview import DensityMap, write_overview
from .prefetch import prefetch_batches
from ..data.slide_readers import SlideError, SlideSource, open_slide
from .stitching import tile_records
from .tiling import TileGrid, batch_tiles, slide_geometry
from .tissue import detect_tissue, load_tissue_mask, mask_area_mm2, slide_thumbnail
from .types import SlideTypes
from .work import WorkFolder
from .writers import write_measurement_outputs, write_nuclei

__all__ = ["segment_slide", "predict_tiles"]

logger = logging.getLogger(__name__)


def _tissue(cfg, source: SlideSource, use_tissue: bool, tissue_mask: Optional[str]):
    """(thumbnail, its scale, tissue mask or None, how it was found)."""
    thumb_mpp = float(cfg.SLIDE.TISSUE.THUMBNAIL_MPP)
    thumb, thumb_scale = slide_thumbnail(source, thumb_mpp)
    if tissue_mask:
        return thumb, thumb_scale, load_tissue_mask(tissue_mask, thumb.shape[:2]), f"mask {tissue_mask}"
    if not use_tissue:
        return thumb, thumb_scale, None, "off"
    mask = detect_tissue(thumb, thumb_scale * source.mpp[0], int(cfg.SLIDE.TISSUE.MIN_SATURATION),
                         float(cfg.SLIDE.TISSUE.MIN_AREA_MM2))
    return thumb, thumb_scale, mask, "detected"


def segment_slide(predictor, cfg, path: str, out_dir: str, mpp: Optional[float] = None, overwrite: bool = False,
                  progress: bool = True) -> Dict:
    """
    Segment one slide and write its outputs to ``out_dir`` (see the module docstring).

    Args:
        predictor: a :class:`d2_nucleus.engine.NucleusPredictor` (or any callable taking a list
            of H x W x 3 uint8 images in ``predictor.input_format`` and returning Instances with
            ``pred_rles`` and ``scores``).
        cfg: the config: every setting (``SLIDE.*``: tiles, tissue and its mask, CSV,
            measurements and stain; ``MODEL.PIXEL_SIZE_UM``; ``TEST.LABEL_MAP_SCORE_THRESH``: the
            outputs keep nuclei scoring at least this).
        path: the slide file.
        out_dir: where its outputs go.
        mpp: level-0 um/px, overriding the slide's metadata (a per-slide input: a manifest row).
        overwrite: replace existing outputs.
        progress: a progress bar over the slide's tiles.

    Returns:
        the summary (also written to ``<slide>.summary.json``); ``{"status": "exists", ...}``
        when the slide's outputs are already complete and not ``overwrite``.

    Raises:
        SlideError: unreadable slide, no resolution, no tissue (the message names the file).
        OutputExistsError: outputs exist (without ``overwrite``).
        OutputIsInputError: an output would replace the slide, its tissue mask or the weights.
    """
    start = time.perf_counter()
    check_slide_outputs(cfg, [path], out_dir)  # no output replaces the slide, its mask or the weights
    stem = slide_stem(path)
    measure = bool(cfg.SLIDE.MEASUREMENTS.ENABLED)
    stain = str(cfg.SLIDE.MEASUREMENTS.STAIN) if measure else None
    if measure and stain not in STAIN_METHODS:
        raise ValueError(f"stain method must be one of {STAIN_METHODS}, got {stain!r}")
    outputs = SlideOutputs.for_slide(out_dir, stem, bool(cfg.SLIDE.CSV), measure)
    if os.path.isfile(outputs.summary) and not overwrite:
        return {"status": "exists", "slide": path, "summary": outputs.summary}
    use_tissue = bool(cfg.SLIDE.TISSUE.ENABLED)
    tissue_mask = tissue_mask_for(str(cfg.SLIDE.TISSUE.MASK), path)

    source = open_slide(path, mpp)
    work = None
    try:
        mpp0 = source.mpp[0]
        geometry = slide_geometry(source, model_mpp(cfg), float(cfg.SLIDE.MPP_TOLERANCE))
        grid = TileGrid(geometry.width, geometry.height, int(cfg.SLIDE.TILE_SIZE), int(cfg.SLIDE.OVERLAP))
        thumb, thumb_scale, tissue, tissue_how = _tissue(cfg, source, use_tissue, tissue_mask)
        selected = grid.select(tissue, thumb_scale, geometry)
        if not selected.any():
            raise SlideError(f"{path}: no tissue found (pass --no-tissue-mask to segment every tile)")
        w0, h0 = source.dimensions
        tissue_mm2 = (mask_area_mm2(tissue, thumb_scale * mpp0) if tissue is not None
                      else w0 * h0 * mpp0 * source.mpp[1] / 1e6)
        rgb_from_stain = None
        if measure:
            stain, rgb_from_stain = slide_stain_matrix(thumb, stain, path)
        types = SlideTypes(cfg, predictor, geometry, thumb, path) if cfg.TYPES.CLASSIFIER else None
        weights = str(cfg.MODEL.WEIGHTS)
        st = os.stat(path)
        run_info = {
            "slide": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "mpp": list(source.mpp), "geometry": geometry.__dict__, "tile_size": grid.tile_size,
            "overlap": grid.overlap, "tiles": hashlib.sha256(np.packbits(selected).tobytes()).hexdigest(),
            "score_thresh": float(cfg.TEST.LABEL_MAP_SCORE_THRESH),
            "config_sha256": hashlib.sha256(cfg.dump().encode("utf-8")).hexdigest(),
            "weights_sha256": file_sha256(weights) if os.path.isfile(weights) else weights,
            # done records hold the measurements only when they are on
            "measurements": {"stain": stain, "rgb_from_stain": np.asarray(rgb_from_stain).tolist()}
            if measure else None,
            "types": types.run_info() if types is not None else None,  # the done records' types
        }
        # Existing outputs are replaced only with --overwrite, or when an interrupted run of this
        # very slide and settings wrote them (its work folder is there and matches).
        own = WorkFolder.matches(outputs.work, run_info)
        for target in outputs.files():
            check_writable(target, overwrite=overwrite or own)
        work = WorkFolder(outputs.work, run_info)

        tiles = [t for t in grid if selected[t.row, t.col]]
        # whole batches as an uninterrupted run forms them (tiles of one size: batch_tiles), so a
        # resumed run computes every tile as the uninterrupted run does
        todo = [b for b in batch_tiles(tiles, max(1, int(cfg.SLIDE.BATCH_SIZE))) if not all(map(work.done, b))]
        timing = {"read": 0.0, "model": 0.0, "stitch": 0.0, "measure": 0.0, "types": 0.0}
        predict_tiles(predictor, cfg, source, geometry, grid, todo, work, timing, progress, path,
                      rgb_from_stain if measure else False, types)

        t0 = time.perf_counter()
        density = DensityMap(w0, h0, mpp0, float(cfg.SLIDE.HEATMAP_BIN_UM), len(types.names) if types else 0)
        counts = write_nuclei(cfg, tiles, grid, geometry, work, outputs, stem, source.mpp, density, overwrite or own,
                              measure, types)
        timing["stitch"] += time.perf_counter() - t0
        measurement_summary = None
        if measure:
            t0 = time.perf_counter()
            measurement_summary = write_measurement_outputs(outputs, path, mpp0, tissue_mm2, overwrite or own,
                                                            types.names if types else None,
                                                            types.colors if types else None)
            timing["measure"] += time.perf_counter() - t0

        title = f"{os.path.basename(path)}: {counts['nuclei']} nuclei, {tissue_mm2:.2f} mm² tissue"
        write_overview(outputs.overview, thumb, thumb_scale, tissue, density, title, overwrite=overwrite or own,
                       types=(types.names, types.colors) if types else None)
        summary = {
            "status": "done",
            "slide": os.path.abspath(path),
            "format": source.format,
            "dimensions": [int(w0), int(h0)],
            "mpp": [float(m) for m in source.mpp],
            "model_mpp": model_mpp(cfg),
            "level": geometry.level,
            "level_downsample": geometry.level_downsample,
            "working_mpp": geometry.working_mpp,
            "resampled": geometry.resample,
            "tile_size": grid.tile_size,
            "overlap": grid.overlap,
            "batch_size": int(cfg.SLIDE.BATCH_SIZE),
            "device": str(cfg.MODEL.DEVICE),
            "tiles": len(grid),
            "tiles_run": len(tiles),
            "tiles_skipped_fraction": 1.0 - len(tiles) / len(grid),
            "tissue": tissue_how,
            "tissue_mm2": tissue_mm2,
            "nuclei": counts["nuclei"],
            "nuclei_per_mm2_tissue": counts["nuclei"] / tissue_mm2 if tissue_mm2 > 0 else None,
            "duplicates_removed": counts["duplicates"],
            "nuclei_cut_at_tile_edges": counts["cut"],
            "score_thresh": float(cfg.TEST.LABEL_MAP_SCORE_THRESH),
            "resumed_tiles": len(tiles) - sum(map(len, todo)),
            "seconds": time.perf_counter() - start,
            "seconds_read": timing["read"],
            "seconds_model": timing["model"],
            "seconds_stitch": timing["stitch"],
            "seconds_measure": timing["measure"],
            "seconds_types": timing["types"],
            "config_sha256": run_info["config_sha256"],
            "weights": weights,
            "weights_sha256": run_info["weights_sha256"],
            "outputs": {"geojson": outputs.geojson, "table": outputs.table, "csv": outputs.csv,
                        "overview": outputs.overview, "measurements_figure": outputs.figure},
            "stain": stain,
            "stain_vectors": np.asarray(rgb_from_stain).round(6).tolist() if stain == "macenko" else None,
            # median, quartiles, IQR, mean of each measurement (measurements.summary.summarize)
            "measurements": measurement_summary,
            # count, fraction and density per mm^2 of tissue of each nucleus type (export.classes)
            "type_classifier": types.path if types else None,
            "types": class_count_summary(counts["types"], types.names, tissue_mm2, types.colors) if types else None,
        }
        if counts["cut"]:
            logger.warning("%s: %d nuclei touch a tile edge (larger than SLIDE.OVERLAP %d px): raise the overlap",
                           path, counts["cut"], grid.overlap)
        atomic_write_json(outputs.summary, summary, overwrite=True)  # last: marks the slide complete
        work.remove()
        return summary
    except SlideError:
        # bad input: nothing of this slide is kept (an interruption keeps the work folder to resume)
        if work is not None:
            work.remove()
        raise
    finally:
        source.close()


def predict_tiles(predictor, cfg, source, geometry, grid, todo, work, timing, progress, path, rgb_from_stain=False,
                  types: Optional[SlideTypes] = None):
    """
    Run the model on the ``todo`` batches of tiles and store each tile's nuclei (and, unless ``rgb_from_stain``
    is False, their measurements with that stain matrix; with ``types``, their types) as its done record.
    """
    from tqdm import tqdm

    bgr = getattr(predictor, "input_format", "BGR") == "BGR"
    score_thresh = float(cfg.TEST.LABEL_MAP_SCORE_THRESH)
    tolerance = int(cfg.SLIDE.SEAM_TOLERANCE)
    bar = tqdm(total=sum(map(len, todo)), unit="tile", desc=os.path.basename(path), disable=not progress or not todo)
    batches = prefetch_batches(source, geometry, todo, int(cfg.SLIDE.PREFETCH_BATCHES), timing)
    try:
        for batch, images in batches:
            t0 = time.perf_counter()
            outputs = predictor([img[:, :, ::-1] if bgr else img for img in images])
            timing["model"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            for tile, image, instances in zip(batch, images, outputs):
                records, cut, index = tile_records(instances, tile, grid, score_thresh, tolerance)
                values = typed = None
                if rgb_from_stain is not False:
                    t1 = time.perf_counter()
                    values = measure_tile(records, tile, image, rgb_from_stain)
                    timing["measure"] += time.perf_counter() - t1
                    t0 += time.perf_counter() - t1  # not stitching time
                if types is not None:
                    t1 = time.perf_counter()
                    typed = types.classify_tile(records, index, instances, tile, image)
                    timing["types"] += time.perf_counter() - t1
                    t0 += time.perf_counter() - t1
                work.save(tile, records, cut, measurements=values, types=typed)
            timing["stitch"] += time.perf_counter() - t0
            bar.update(len(batch))
    finally:
        batches.close()
        bar.close()
