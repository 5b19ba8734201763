# -*- coding: utf-8 -*-
"""
Slides one after another (tools/segment_slides.py) and the one rule, shared with the Dask task
(:mod:`.cluster`), for what a failing slide means: an error that belongs to the slide (unreadable,
truncated or unsupported file, no resolution, no tissue, outputs in the way, a value the slide
cannot be processed with) is reported with the slide's name and the other slides go on; anything
else is a bug and propagates.
"""
import logging
from typing import Dict, List, Optional, Sequence, Tuple

from ..utils.file_io import OutputExistsError
from .pipeline import segment_slide
from ..data.slide_readers import SlideError

__all__ = ["SLIDE_ERRORS", "run_one_slide", "segment_slides", "slide_error_message"]

logger = logging.getLogger(__name__)

# Errors that belong to the slide: reported, the others go on (and a Dask task does not retry them).
SLIDE_ERRORS = (SlideError, OutputExistsError, OSError, ValueError)


def slide_error_message(path: str, error: BaseException) -> str:
    """One line naming the slide (the error's own message when it names it already)."""
    message = " ".join(str(error).split())
    return message if path in message else f"{path}: {message}"


def run_one_slide(predictor, cfg, path: str, out_dir: str, mpp: Optional[float] = None, overwrite: bool = False,
                  progress: bool = True) -> Tuple[Optional[Dict], Optional[str]]:
    """
    :func:`segment_slide` with :data:`SLIDE_ERRORS` turned into a one-line message.

    Returns:
        (summary, None) or (None, the error line).
    """
    try:
        return segment_slide(predictor, cfg, path, out_dir, mpp=mpp, overwrite=overwrite, progress=progress), None
    except SLIDE_ERRORS as e:
        message = slide_error_message(path, e)
        logger.error("%s", message)
        return None, message


def segment_slides(predictor, cfg, paths: Sequence[str], out_dir: str, mpp: Optional[float] = None,
                   overwrite: bool = False, progress: bool = True) -> Tuple[List[Dict], List[str]]:
    """
    Segment several slides with one model; a bad slide does not stop the others.

    Returns:
        (summaries of the slides done or already complete, one-line errors of the others).
    """
    summaries, errors = [], []
    for path in paths:
        summary, error = run_one_slide(predictor, cfg, path, out_dir, mpp=mpp, overwrite=overwrite, progress=progress)
        if error is None:
            summaries.append(summary)
        else:
            errors.append(error)
    return summaries, errors
