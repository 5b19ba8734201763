# -*- coding: utf-8 -*-
"""Small helpers shared across d2_nucleus."""
