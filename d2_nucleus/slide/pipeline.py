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

Memory is bounded by a batch of tiles and two rows of seam nuclei, whatever the slide's size.
"""
import hashlib
import logging
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa

from ..export.geojson import detection_feature, mask_to_geometry, write_geojson_features
from ..export.tables import TABLE_COLUMNS, NucleusTableWriter
from ..measurements.figure import FIGURE_COLUMNS, write_distributions
from ..measurements.qupath import qupath_measurements
from ..measurements.stain import STAIN_METHODS
from ..measurements.summary import SUMMARY_COLUMNS, read_summary_columns, summarize
from ..utils.file_io import OutputExistsError, atomic_write_json, check_writable
from .config import model_mpp
from .measure import TILE_COLUMNS, level0_columns, measure_tile, slide_stain_matrix
from .overview import DensityMap, write_overview
from .readers import SlideError, SlideSource, open_slide
from .stitching import SeamStitcher, tile_records
from .tiling import SlideGeometry, Tile, TileGrid, batch_tiles, read_tile, slide_geometry
from .tissue import detect_tissue, load_tissue_mask, mask_area_mm2, slide_thumbnail
from .work import WorkFolder

__all__ = ["SLIDE_EXTENSIONS", "SlideOutputs", "list_slides", "segment_slide", "segment_slides", "file_sha256"]

logger = logging.getLogger(__name__)

SLIDE_EXTENSIONS = (
    ".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm",
    ".png", ".jpg", ".jpeg", ".bmp",
)

# Table columns the slide pipeline fills (see d2_nucleus.export.tables.TABLE_COLUMNS).
_TABLE_FIELDS = (
    "id", "image", "tile", "score", "centroid_x", "centroid_y", "centroid_x_um", "centroid_y_um",
    "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "area_px", "area_um2",
)


@dataclass
class SlideOutputs:
    geojson: str
    table: str
    csv: Optional[str]
    overview: str
    summary: str
    work: str
    figure: Optional[str] = None  # measurements' distributions (None: measurements off)

    @classmethod
    def for_slide(cls, out_dir: str, stem: str, csv: bool = False, measurements: bool = False) -> "SlideOutputs":
        p = lambda suffix: os.path.join(out_dir, stem + suffix)  # noqa: E731
        return cls(p(".geojson"), p(".parquet"), p(".csv") if csv else None, p(".overview.png"),
                   p(".summary.json"), os.path.join(out_dir, f".{stem}.work"),
                   p(".measurements.png") if measurements else None)

    def files(self) -> List[str]:
        return [f for f in (self.geojson, self.table, self.csv, self.overview, self.figure, self.summary) if f]


def list_slides(inputs: Sequence[str]) -> List[str]:
    """Slide files from files and folders (a folder: its files with a slide/image extension)."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(
                os.path.join(item, n) for n in os.listdir(item)
                if n.lower().endswith(SLIDE_EXTENSIONS) and not n.startswith(".")
                and os.path.isfile(os.path.join(item, n))
            )
            if not found:
                raise ValueError(f"no slides ({', '.join(SLIDE_EXTENSIONS)}) in folder {item!r}")
            paths += found
        else:
            paths.append(item)
    stems = [_stem(p) for p in paths]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise ValueError(f"slides share file names {dup}; their outputs would collide")
    return paths


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


_HASHES: Dict[Tuple[str, int, int], str] = {}


def file_sha256(path: str) -> str:
    """SHA-256 of a file (cached by path, size and mtime)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def _batches(source: SlideSource, geometry: SlideGeometry, batches: List[List[Tile]],
             prefetch: int, timing: Dict[str, float]) -> Iterator[Tuple[List[Tile], List[np.ndarray]]]:
    """The tiles of ``batches`` read by a loader thread, ``prefetch`` batches ahead of the caller."""
    q: "queue.Queue" = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def load():
        try:
            for batch in batches:
                start = time.perf_counter()
                images = [read_tile(source, geometry, t) for t in batch]
                timing["read"] += time.perf_counter() - start
                if not put((batch, images)):
                    return
            put(None)
        except BaseException as e:  # handed to the consumer, raised there
            put(e)

    thread = threading.Thread(target=load, name="slide-tile-loader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


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


def segment_slide(
    predictor,
    cfg,
    path: str,
    out_dir: str,
    mpp: Optional[float] = None,
    use_tissue: Optional[bool] = None,
    tissue_mask: Optional[str] = None,
    csv: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    measurements: Optional[bool] = None,
    stain: Optional[str] = None,
) -> Dict:
    """
    Segment one slide and write its outputs to ``out_dir`` (see the module docstring).

    Args:
        predictor: a :class:`d2_nucleus.engine.NucleusPredictor` (or any callable taking a list
            of H x W x 3 uint8 images in ``predictor.input_format`` and returning Instances with
            ``pred_rles`` and ``scores``).
        cfg: the config (``SLIDE.*``, ``MODEL.PIXEL_SIZE_UM``, ``TEST.LABEL_MAP_SCORE_THRESH``:
            the outputs keep nuclei scoring at least this).
        mpp: level-0 um/px, overriding the slide's metadata.
        use_tissue: run only tiles with tissue (default ``SLIDE.TISSUE.ENABLED``).
        tissue_mask: an image (any size, non-zero = tissue) covering the slide, used instead of
            tissue detection.
        csv: also write the table as CSV.
        overwrite: replace existing outputs.
        measurements: per-nucleus measurements in the table and GeoJSON, their summary and
            figure (default ``SLIDE.MEASUREMENTS.ENABLED``).
        stain: "ruifrok" or "macenko" stain vectors (default ``SLIDE.MEASUREMENTS.STAIN``).

    Returns:
        the summary (also written to ``<slide>.summary.json``); ``{"status": "exists", ...}``
        when the slide's outputs are already complete and not ``overwrite``.

    Raises:
        SlideError: unreadable slide, no resolution, no tissue (the message names the file).
        OutputExistsError: outputs exist (without ``overwrite``).
    """
    start = time.perf_counter()
    stem = _stem(path)
    measure = _measurements_on(cfg, measurements)
    stain = str(cfg.SLIDE.MEASUREMENTS.STAIN if stain is None else stain) if measure else None
    if measure and stain not in STAIN_METHODS:
        raise ValueError(f"stain method must be one of {STAIN_METHODS}, got {stain!r}")
    outputs = SlideOutputs.for_slide(out_dir, stem, csv, measure)
    if os.path.isfile(outputs.summary) and not overwrite:
        return {"status": "exists", "slide": path, "summary": outputs.summary}
    use_tissue = bool(cfg.SLIDE.TISSUE.ENABLED) if use_tissue is None else use_tissue

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
        timing = {"read": 0.0, "model": 0.0, "stitch": 0.0, "measure": 0.0}
        _predict_tiles(predictor, cfg, source, geometry, grid, todo, work, timing, progress, path,
                       rgb_from_stain if measure else False)

        t0 = time.perf_counter()
        density = DensityMap(w0, h0, mpp0, float(cfg.SLIDE.HEATMAP_BIN_UM))
        counts = _write_nuclei(cfg, tiles, grid, geometry, work, outputs, stem, source.mpp, density, overwrite or own,
                               measure)
        timing["stitch"] += time.perf_counter() - t0
        measurement_summary = None
        if measure:
            t0 = time.perf_counter()
            measurement_summary = _measurement_outputs(outputs, path, mpp0, tissue_mm2, overwrite or own)
            timing["measure"] += time.perf_counter() - t0

        title = f"{os.path.basename(path)}: {counts['nuclei']} nuclei, {tissue_mm2:.2f} mm² tissue"
        write_overview(outputs.overview, thumb, thumb_scale, tissue, density, title, overwrite=overwrite or own)
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
            "config_sha256": run_info["config_sha256"],
            "weights": weights,
            "weights_sha256": run_info["weights_sha256"],
            "outputs": {"geojson": outputs.geojson, "table": outputs.table, "csv": outputs.csv,
                        "overview": outputs.overview, "measurements_figure": outputs.figure},
            "stain": stain,
            "stain_vectors": np.asarray(rgb_from_stain).round(6).tolist() if stain == "macenko" else None,
            # median, quartiles, IQR, mean of each measurement (measurements.summary.summarize)
            "measurements": measurement_summary,
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


def _measurements_on(cfg, measurements: Optional[bool]) -> bool:
    if measurements is not None:
        return bool(measurements)
    return bool(cfg.SLIDE.MEASUREMENTS.ENABLED) if "MEASUREMENTS" in cfg.SLIDE else True


def _predict_tiles(predictor, cfg, source, geometry, grid, todo, work, timing, progress, path, rgb_from_stain=False):
    """
    Run the model on the ``todo`` batches of tiles and store each tile's nuclei (and, unless ``rgb_from_stain``
    is False, their measurements with that stain matrix) as its done record.
    """
    from tqdm import tqdm

    bgr = getattr(predictor, "input_format", "BGR") == "BGR"
    score_thresh = float(cfg.TEST.LABEL_MAP_SCORE_THRESH)
    tolerance = int(cfg.SLIDE.SEAM_TOLERANCE)
    bar = tqdm(total=sum(map(len, todo)), unit="tile", desc=os.path.basename(path), disable=not progress or not todo)
    batches = _batches(source, geometry, todo, int(cfg.SLIDE.PREFETCH_BATCHES), timing)
    try:
        for batch, images in batches:
            t0 = time.perf_counter()
            outputs = predictor([img[:, :, ::-1] if bgr else img for img in images])
            timing["model"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            for tile, image, instances in zip(batch, images, outputs):
                records, cut = tile_records(instances, tile, grid, score_thresh, tolerance)
                values = None
                if rgb_from_stain is not False:
                    t1 = time.perf_counter()
                    values = measure_tile(records, tile, image, rgb_from_stain)
                    timing["measure"] += time.perf_counter() - t1
                    t0 += time.perf_counter() - t1  # not stitching time
                work.save(tile, records, cut, measurements=values)
            timing["stitch"] += time.perf_counter() - t0
            bar.update(len(batch))
    finally:
        batches.close()
        bar.close()


def _write_nuclei(cfg, tiles, grid, geometry, work, outputs, stem, mpp, density, overwrite,
                  measure: bool = False) -> Dict[str, int]:
    """Stream the done records, less seam duplicates, into the GeoJSON and the table."""
    stitcher = SeamStitcher(grid, float(cfg.SLIDE.DUPLICATE_IOU))
    s = geometry.scale
    mpp_x, mpp_y = mpp
    counts = {"nuclei": 0, "cut": 0}
    names = set(_TABLE_FIELDS)
    if measure:
        names |= set(level0_columns({c: [] for c in TILE_COLUMNS}, geometry))
    schema = pa.schema([(k, t) for k, t in TABLE_COLUMNS.items() if k in names])

    with NucleusTableWriter(outputs.table, csv_path=outputs.csv, overwrite=overwrite, schema=schema) as table:

        def features():
            for tile in tiles:
                done = work.load(tile)
                counts["cut"] += int(done["cut"])
                rows = {k: [] for k in _TABLE_FIELDS}
                # the stitcher yields the done record's own record objects: their position in it
                position = {id(r): i for i, r in enumerate(done["nuclei"])}
                kept, shapes, ids = [], [], []
                for record, mask in stitcher.add(tile, done["nuclei"]):
                    score, x0, y0, w, h, _ = record
                    nid = counts["nuclei"]
                    counts["nuclei"] += 1
                    kept.append(position[id(record)])
                    ids.append(nid)
                    shapes.append(mask_to_geometry(mask, x0, y0, scale=s))  # level-0 pixels
                    ys, xs = np.nonzero(mask)
                    cx, cy = (xs.mean() + x0 + 0.5) * s - 0.5, (ys.mean() + y0 + 0.5) * s - 0.5
                    n = len(xs)
                    rows["id"].append(nid)
                    rows["image"].append(stem)
                    rows["tile"].append(tile.row * grid.cols + tile.col)
                    rows["score"].append(score)
                    rows["centroid_x"].append(cx)
                    rows["centroid_y"].append(cy)
                    rows["centroid_x_um"].append(cx * mpp_x)
                    rows["centroid_y_um"].append(cy * mpp_y)
                    rows["bbox_x0"].append(int(np.floor(x0 * s)))
                    rows["bbox_y0"].append(int(np.floor(y0 * s)))
                    rows["bbox_x1"].append(int(np.ceil((x0 + w) * s)))
                    rows["bbox_y1"].append(int(np.ceil((y0 + h) * s)))
                    rows["area_px"].append(int(round(n * s * s)))
                    rows["area_um2"].append(n * geometry.working_mpp**2)
                if not ids:
                    continue
                columns = {k: np.asarray(v) for k, v in rows.items()}
                extra = [{} for _ in ids]
                if measure:
                    values = done["measurements"]
                    columns.update(level0_columns({c: [values[c][i] for i in kept] for c in TILE_COLUMNS}, geometry))
                    extra = qupath_measurements(columns, mpp_x)
                table.write(columns)
                density.add(columns["centroid_x"], columns["centroid_y"])
                for nid, shape, score, more in zip(ids, shapes, rows["score"], extra):
                    feature_id = str(uuid.uuid5(uuid.NAMESPACE_OID, f"d2_nucleus/{stem}/{nid}"))
                    yield detection_feature(shape, feature_id, score, measurements=more)

        write_geojson_features(features(), outputs.geojson, overwrite=overwrite)
    counts["duplicates"] = stitcher.duplicates
    return counts


def _measurement_outputs(outputs: SlideOutputs, path: str, mpp: float, tissue_mm2: float, overwrite: bool) -> Dict:
    """
    The per-slide measurement summary (returned, for the summary JSON) and figure, from the table.
    The table is read one column at a time for the summary, and only the figure's columns for
    the figure: memory is a few columns of the slide's nuclei (8 bytes a nucleus each).
    """
    stats = {}
    for name in SUMMARY_COLUMNS:
        columns, count = read_summary_columns(outputs.table, [name])
        if columns:
            stats.update(summarize(columns, mpp=mpp, tissue_area_mm2=tissue_mm2, count=count,
                                   summary_columns=[name])["measurements"])
    columns, _ = read_summary_columns(outputs.table, FIGURE_COLUMNS)
    write_distributions(columns, outputs.figure, title=os.path.basename(path), overwrite=overwrite)
    return stats


def segment_slides(predictor, cfg, paths: Sequence[str], out_dir: str, mpp: Optional[float] = None,
                   use_tissue: Optional[bool] = None, tissue_mask: Optional[str] = None, csv: bool = False,
                   overwrite: bool = False, progress: bool = True, measurements: Optional[bool] = None,
                   stain: Optional[str] = None) -> Tuple[List[Dict], List[str]]:
    """
    Segment several slides; a bad slide does not stop the others.

    ``tissue_mask``: one mask image for a single slide, or a folder of ``<slide stem>.png``
    masks (slides without one get tissue detection).

    Returns:
        (summaries of the slides done or already complete, one-line errors of the others).
    """
    summaries, errors = [], []
    for path in paths:
        mask = tissue_mask
        if tissue_mask and os.path.isdir(tissue_mask):
            candidate = os.path.join(tissue_mask, _stem(path) + ".png")
            mask = candidate if os.path.isfile(candidate) else None
        try:
            summaries.append(segment_slide(predictor, cfg, path, out_dir, mpp=mpp, use_tissue=use_tissue,
                                           tissue_mask=mask, csv=csv, overwrite=overwrite, progress=progress,
                                           measurements=measurements, stain=stain))
        except (SlideError, OutputExistsError, OSError) as e:
            logger.error("%s", e)
            errors.append(str(e) if path in str(e) else f"{path}: {e}")
    return summaries, errors
