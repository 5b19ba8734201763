# -*- coding: utf-8 -*-
"""The config's one error type."""

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the file (or override)."""
