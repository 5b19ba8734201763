# -*- coding: utf-8 -*-
"""The files one slide's run writes (and its resumable work folder), named after the slide."""
import os
from dataclasses import dataclass
from typing import List, Optional

__all__ = ["SlideOutputs"]


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
