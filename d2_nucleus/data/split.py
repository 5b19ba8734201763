# -*- coding: utf-8 -*-
"""
Seeded train/val split of image ids, identical on any machine and library version.

Images are ordered by SHA-256 of "<seed>:<image id>" (no random generator whose stream could change
between NumPy versions) and the first ceil(ratio * N) go to val. Adding an image moves at most that
image and one other across the boundary.
"""
import hashlib
import json
import math
from typing import Dict, List, Sequence, Tuple

__all__ = ["split_image_ids", "split_dict", "load_split"]


def split_image_ids(image_ids: Sequence[str], ratio: float = 0.2, seed: int = 0) -> Tuple[List[str], List[str]]:
    """
    Returns:
        (train ids, val ids), each sorted.

    Raises:
        ValueError: ratio outside [0, 1), duplicate ids, or no image left for training.
    """
    if not 0 <= ratio < 1:
        raise ValueError(f"split ratio must be in [0, 1), got {ratio}")
    ids = list(image_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate image ids")
    n_val = math.ceil(ratio * len(ids) - 1e-9)
    if n_val >= len(ids):
        raise ValueError(f"ratio {ratio} leaves no training image out of {len(ids)}")
    order = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode("utf-8")).hexdigest())
    val = set(order[:n_val])
    return sorted(i for i in ids if i not in val), sorted(val)


def split_dict(image_ids: Sequence[str], ratio: float = 0.2, seed: int = 0) -> Dict:
    """The split as written to split.json: {"seed", "ratio", "method", "train", "val"}."""
    train, val = split_image_ids(image_ids, ratio, seed)
    return {"seed": seed, "ratio": ratio, "method": "sha256(seed:id)", "train": train, "val": val}


def load_split(path: str) -> Dict:
    """Read a split.json; checks it has disjoint "train" and "val" lists of ids."""
    try:
        with open(path) as f:
            d = json.load(f)
    except OSError as e:
        raise FileNotFoundError(f"{path}: cannot read split file ({e.strerror or e})") from None
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not (isinstance(d, dict) and isinstance(d.get("train"), list) and isinstance(d.get("val"), list)):
        raise ValueError(f"{path}: expected {{\"train\": [ids], \"val\": [ids]}}")
    both = set(d["train"]) & set(d["val"])
    if both:
        raise ValueError(f"{path}: ids in both train and val: {sorted(both)[:5]}")
    return d
