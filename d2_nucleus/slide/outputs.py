# -*- coding: utf-8 -*-
"""The files one slide's run writes (and its resumable work folder), named after the slide."""
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence

from ..utils.file_io import OutputIsInputError, check_not_input
from .inputs import slide_stem, tissue_mask_for

__all__ = ["SlideOutputs", "check_slide_outputs"]


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
        """The output files, the summary last (it is written last: a slide with one is complete)."""
        return [f for f in (self.geojson, self.table, self.csv, self.overview, self.figure, self.summary) if f]


def check_slide_outputs(cfg, slides: Sequence[str], out_dir: str, inputs: Sequence[str] = (),
                        outputs: Sequence[str] = ()) -> None:
    """
    Before anything is written, whatever ``--overwrite``: no output of a run over ``slides`` (each
    slide's files and work folder in ``out_dir``, ``outputs``: e.g. the cluster's report) is one
    of its inputs (the slides, their tissue masks, the weights, the type classifier, ``inputs``:
    the config file, the manifests) or another output (:func:`~d2_nucleus.utils.file_io.check_not_input`), and
    ``out_dir`` is not a folder of slides or masks given as input.

    Raises:
        OutputIsInputError (a ValueError): one line naming both.
    """
    csv, measure = bool(cfg.SLIDE.CSV), bool(cfg.SLIDE.MEASUREMENTS.ENABLED)
    files = list(outputs)
    for path in slides:
        written = SlideOutputs.for_slide(out_dir, slide_stem(path), csv, measure)
        files += written.files() + [written.work]  # the work folder is deleted as a whole
    mask = str(cfg.SLIDE.TISSUE.MASK)
    reads = list(slides) + [mask] + [tissue_mask_for(mask, p) for p in slides] + [str(cfg.MODEL.WEIGHTS)]
    reads.append(str(cfg.TYPES.CLASSIFIER))
    reads += list(inputs)
    check_not_input(files, reads)
    for folder in reads:  # the outputs (.png) would be taken for slides (or masks) by the next run
        if folder and os.path.isdir(folder) and os.path.realpath(folder) == os.path.realpath(out_dir):
            raise OutputIsInputError(f"--out {out_dir} is the input folder {folder}: the next run would read the "
                                     "outputs (.png) as slides; choose another --out")
