# -*- coding: utf-8 -*-
"""What every d2_nucleus command-line tool sets up for its own process (never done on import)."""
import warnings

__all__ = ["error_line", "quiet_known_warnings"]


def quiet_known_warnings() -> None:
    """
    Hide warnings that only clutter a CLI's output: Detectron2 v0.6 decorates a few helpers with
    ``torch.jit.script``, which torch>=2.9 reports as deprecated at every import (the helpers
    work). A process-wide filter, so only entry points (``tools/*.py``) call this.
    """
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)


def error_line(prog: str, e: BaseException) -> str:
    """``"<prog>: error: <message>"`` on one line (a KeyError's message without its quotes)."""
    msg = e.args[0] if isinstance(e, KeyError) and e.args else e
    return f"{prog}: error: {' '.join(str(msg).split())}"
