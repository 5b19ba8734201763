# -*- coding: utf-8 -*-
"""Lazy package attributes (PEP 562): a package exports names whose modules load on first use."""
import importlib
from typing import Callable, Dict, Tuple

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, modules: Dict[str, Tuple[str, ...]], namespace: dict) -> Tuple[Callable, Callable]:
    """
    ``__getattr__`` and ``__dir__`` for a package whose public names (``modules``: relative module
    -> the names it defines) are imported when first accessed, then cached in the package's
    ``namespace`` (its globals).
    """
    names = {name: module for module, defined in modules.items() for name in defined}

    def __getattr__(name):
        if name in names:
            value = getattr(importlib.import_module(names[name], package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
