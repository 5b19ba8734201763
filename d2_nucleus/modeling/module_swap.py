# -*- coding: utf-8 -*-
"""
The one way d2_nucleus changes modules of a built model: every conversion (the CPU kernels of
:mod:`.cpu`, frozen GroupNorm, float32 box predictors) goes through these two functions, which
never add, remove or rename a parameter, so checkpoints load either way.
"""
from typing import Callable, Union

from torch import nn

__all__ = ["replace_modules", "swap_module_class"]

Match = Union[type, Callable[[nn.Module], bool]]


def _matcher(match: Match) -> Callable[[nn.Module], bool]:
    if isinstance(match, type):
        return lambda m: type(m) is match  # exactly this class: subclasses are someone's choice
    return match


def replace_modules(root: nn.Module, match: Match, build: Callable[[nn.Module], nn.Module]) -> int:
    """
    Replace every submodule of ``root`` that ``match`` selects (a class: exactly that class; or a
    predicate) by ``build(old)``, in place. ``build`` shares the old module's parameters with the
    new one (e.g. ``new.weight = old.weight``). Returns how many were replaced.
    """
    selected = _matcher(match)
    n = 0
    for parent in list(root.modules()):
        for name, child in list(parent.named_children()):
            if selected(child):
                new = build(child)
                new.train(child.training)
                setattr(parent, name, new)
                n += 1
    return n


def swap_module_class(root: nn.Module, match: Match, new_class: Union[type, Callable[[nn.Module], type]],
                      **attributes) -> int:
    """
    Give every module of ``root`` (``root`` included) that ``match`` selects the class
    ``new_class`` (a subclass of its own adding behaviour, no state; or a function of the module
    returning one), and set ``attributes`` on it. Returns how many.
    """
    selected = _matcher(match)
    n = 0
    for m in list(root.modules()):
        if selected(m):
            m.__class__ = new_class(m) if not isinstance(new_class, type) else new_class
            for k, v in attributes.items():
                setattr(m, k, v)
            n += 1
    return n
