# -*- coding: utf-8 -*-
"""What every d2_nucleus command-line tool sets up for its own process (never done on import)."""
import warnings

__all__ = ["quiet_known_warnings"]


def quiet_known_warnings() -> None:
    """
    Hide warnings that only clutter a CLI's output: Detectron2 v0.6 decorates a few helpers with
    ``torch.jit.script``, which torch>=2.9 reports as deprecated at every import (the helpers
    work). A process-wide filter, so only entry points (``tools/*.py``) call this.
    """
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
