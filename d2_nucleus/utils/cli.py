# -*- coding: utf-8 -*-
"""What every d2_nucleus command-line tool sets up for its own process (never done on import)."""
import math
import sys
import warnings
from typing import Callable, Optional

__all__ = ["check_flag_number", "error_line", "quiet_known_warnings", "run_main"]


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


def check_flag_number(value: Optional[float], flag: str, zero_ok: bool = False) -> None:
    """
    A number flag (e.g. ``--mpp``; ``None`` = not given) must be finite and positive (or zero with
    ``zero_ok``): argparse's ``float`` accepts ``nan``, ``inf`` and negatives, which fail later
    with an unrelated message. Raises ValueError naming the flag.
    """
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise ValueError(f"{flag} must be a finite number {'>= 0' if zero_ok else '> 0'}, got {value}")


def run_main(main: Callable, prog: str, interrupted: str = "") -> int:
    """
    ``main()``'s exit status (an int; anything else is 0), except that Ctrl-C (KeyboardInterrupt)
    prints one line, ``"<prog>: interrupted (Ctrl-C)[; <interrupted>]"``, and gives 130
    (128 + SIGINT, as a shell reports it) instead of a traceback.
    """
    try:
        code = main()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (Ctrl-C)" + (f"; {interrupted}" if interrupted else ""), file=sys.stderr)
        return 130
    return code if isinstance(code, int) and not isinstance(code, bool) else 0
