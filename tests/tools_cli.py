# -*- coding: utf-8 -*-
"""The command-line tools (``tools/*.py``: scripts, not a package) loaded as modules for tests."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_tool(name: str):
    """``tools/<name>.py`` as a module (its ``main``, ``get_parser``, ``setup_cfg``, ...)."""
    spec = importlib.util.spec_from_file_location(f"{name}_cli", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
