# -*- coding: utf-8 -*-
"""
:class:`TypeClassifier`: a nucleus type classifier (a small MLP, or multinomial logistic
regression, on standardised features) and its file.

The file is ONE ``.npz`` (NumPy's zip of ``.npy`` arrays) read with ``np.load(allow_pickle=False)``:
loading it runs no code. It holds a JSON header (as a uint8 array: class names, colours, the
feature recipe: which features, measurement names, box-feature dimension, the segmentation
model's fingerprint and the resolution its features were computed at, the stain method) and the
arrays (normalisation mean and std, each layer's weight and bias). A classifier made for another
model's box features is refused (:meth:`TypeClassifier.check_model`); an unreadable, truncated or
inconsistent file is a one-line :class:`BadClassifierError` naming it.

Inference is NumPy only (no torch), so a slide worker can apply it per tile.
"""
import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .features import FEATURE_KINDS, MEASUREMENT_FEATURES, MODEL_FEATURES, feature_matrix

__all__ = ["BadClassifierError", "DEFAULT_COLORS", "TypeClassifier", "default_colors"]

FORMAT = "d2_nucleus.types.classifier"
VERSION = 1

# Colours (RGB) for common class names, else a palette; QuPath shows a class in its colour.
DEFAULT_COLORS = {
    "epithelial": (200, 0, 0), "tumor": (200, 0, 0), "tumour": (200, 0, 0),
    "fibroblast": (0, 150, 0), "stroma": (150, 200, 150),
    "inflammatory": (30, 90, 255), "lymphocyte": (30, 90, 255), "immune cells": (160, 90, 160),
    "others": (255, 200, 0), "other": (255, 200, 0), "necrosis": (50, 50, 50),
}  # fmt: skip
_PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
            (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40), (128, 0, 0), (0, 0, 128))


def default_colors(names: Sequence[str]) -> List[Tuple[int, int, int]]:
    """A colour per class name: :data:`DEFAULT_COLORS` by name, else distinct palette colours."""
    out, used = [], set()
    for name in names:
        color = DEFAULT_COLORS.get(str(name).lower())
        if color is None or color in used:
            color = next((c for c in _PALETTE if c not in used), _PALETTE[len(out) % len(_PALETTE)])
        used.add(color)
        out.append(tuple(int(v) for v in color))
    return out


class BadClassifierError(ValueError):
    """A classifier file that cannot be used (unreadable, corrupt, or for other features)."""


@dataclass
class TypeClassifier:
    """
    Attributes:
        class_names: the types, in the order of the output probabilities.
        colors: RGB colour of each type (overlays, QuPath).
        recipe: the features it expects: ``{"features": [...], "measurement_names": [...],
            "box_dim": D or 0 (of the box and of the context features), "context_scale": s,
            "model": {"fingerprint": sha256 of the model's state dict, ...},
            "working_mpp": um per model-input pixel, "stain": "ruifrok" | "macenko",
            "patch": {"px": P, "um": size, "mean": [r, g, b], "std": [r, g, b]} (with "patch")}``.
        mean, std: feature standardisation.
        layers: [(weight (out x in), bias (out,)), ...]; ReLU between layers; the first takes the
            patch branch's pooled output (if any) followed by the standardised features.
        info: free-form training record (counts, settings) kept in the file.
        convs: the patch branch's 3 x 3 convolutions [(weight (out, in, 3, 3), bias (out,)), ...],
            batch norms folded in (:mod:`.network`).
    """

    class_names: Sequence[str]
    colors: Sequence[Tuple[int, int, int]]
    recipe: Dict
    mean: np.ndarray
    std: np.ndarray
    layers: List[Tuple[np.ndarray, np.ndarray]]
    info: Dict = field(default_factory=dict)
    convs: List[Tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    # -- what it needs -----------------------------------------------------------------------
    @property
    def features(self) -> List[str]:
        return list(self.recipe["features"])

    @property
    def needs_model_features(self) -> bool:
        """Whether it reads the segmentation model's own features (box or context)."""
        return any(k in self.recipe["features"] for k in MODEL_FEATURES)

    @property
    def needs_patches(self) -> bool:
        return "patch" in self.recipe["features"]

    @property
    def context_scale(self) -> float:
        return float(self.recipe.get("context_scale") or 0.0) if "context" in self.recipe["features"] else 0.0

    @property
    def needs_measurements(self) -> bool:
        return "measurements" in self.recipe["features"]

    @property
    def feature_dim(self) -> int:
        return int(len(self.mean))

    def check_model(self, fingerprint: Optional[str], source: str = "") -> None:
        """Refuse (one line) to classify box features of another model than the one trained on."""
        if not self.needs_model_features:
            return
        want = self.recipe.get("model", {}).get("fingerprint")
        if fingerprint != want:
            raise BadClassifierError(
                f"{source or 'type classifier'}: made for the box features of another segmentation model "
                f"(weights fingerprint {str(want)[:12]}..., this model's {str(fingerprint)[:12]}...); "
                "train one for these weights with tools/train_types.py"
            )

    # -- inference ---------------------------------------------------------------------------
    def feature_matrix(self, model_features: Optional[Mapping[str, np.ndarray]] = None,
                       columns: Optional[Mapping[str, np.ndarray]] = None, num: Optional[int] = None) -> np.ndarray:
        x = feature_matrix(self.features, model_features, columns, num=num,
                           measurement_names=self.recipe.get("measurement_names", MEASUREMENT_FEATURES))
        if x.shape[1] != self.feature_dim:
            raise ValueError(f"the classifier expects {self.feature_dim} features a nucleus, got {x.shape[1]}")
        return x

    def standardize(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, np.float64) - self.mean) / self.std
        return np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)  # undefined -> the training mean

    def predict_proba(self, x: np.ndarray, patches: Optional[np.ndarray] = None) -> np.ndarray:
        """(N, K) probabilities of the raw (unstandardised) feature rows ``x`` and uint8 ``patches``."""
        h = self.standardize(x).astype(np.float32)
        if self.convs:
            if patches is None or len(patches) != len(h):
                raise ValueError("the classifier needs an image patch around each nucleus")
            from .network import patch_embedding

            p = self.recipe["patch"]
            h = np.concatenate([patch_embedding(self.convs, patches, p["mean"], p["std"]).astype(np.float32), h], axis=1)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w.T + b
            if i < len(self.layers) - 1:
                np.maximum(h, 0, out=h)
        h = h - h.max(axis=1, keepdims=True) if len(h) else h
        e = np.exp(h)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float64) if len(e) else np.zeros((0, len(self.class_names)))

    def predict(self, model_features: Optional[Mapping[str, np.ndarray]] = None,
                columns: Optional[Mapping[str, np.ndarray]] = None,
                patches: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """
        (type index (N,) int64, probabilities (N, K)) of N nuclei from the model's features
        (``{"box": (N, D), "context": (N, D)}``, those it needs), their measurement ``columns``
        and their image patches (:func:`.patches.extract_patches`, with the "patch" kind).
        """
        num = len(patches) if patches is not None else None
        probs = self.predict_proba(self.feature_matrix(model_features, columns, num), patches)
        return probs.argmax(axis=1).astype(np.int64), probs

    # -- file ----------------------------------------------------------------------------------
    def header(self) -> Dict:
        return {
            "format": FORMAT, "version": VERSION, "classes": list(self.class_names),
            "colors": [list(map(int, c)) for c in self.colors], "recipe": self.recipe,
            "layers": len(self.layers), "convs": len(self.convs), "info": self.info,
        }  # fmt: skip

    def to_bytes(self) -> bytes:
        arrays = {"header": np.frombuffer(json.dumps(self.header()).encode("utf-8"), np.uint8),
                  "mean": np.asarray(self.mean, np.float64), "std": np.asarray(self.std, np.float64)}
        for i, (w, b) in enumerate(self.layers):
            arrays[f"layer{i}_weight"] = np.asarray(w, np.float32)
            arrays[f"layer{i}_bias"] = np.asarray(b, np.float32)
        for i, (w, b) in enumerate(self.convs):
            arrays[f"conv{i}_weight"] = np.asarray(w, np.float32)
            arrays[f"conv{i}_bias"] = np.asarray(b, np.float32)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    def save(self, path: str, overwrite: bool = False) -> None:
        """Write the file atomically (:func:`d2_nucleus.utils.file_io.atomic_write`)."""
        from ..utils.file_io import atomic_write

        with atomic_write(path, overwrite=overwrite) as f:
            f.write(self.to_bytes())

    @classmethod
    def load(cls, path: str) -> "TypeClassifier":
        """Read a classifier file safely; every problem is a one-line :class:`BadClassifierError`."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except FileNotFoundError:
            raise BadClassifierError(f"{path}: type classifier file does not exist") from None
        except IsADirectoryError:
            raise BadClassifierError(f"{path}: is a folder, not a type classifier file") from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
            msg = " ".join(str(e).split())
            raise BadClassifierError(f"{path}: not a readable type classifier file (corrupt or truncated?): {msg}") from None
        try:
            return cls._from_arrays(arrays)
        except (KeyError, ValueError, TypeError, IndexError, UnicodeDecodeError) as e:
            msg = " ".join(str(e).split())
            raise BadClassifierError(f"{path}: not a valid type classifier file: {msg}") from None

    @classmethod
    def _from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "TypeClassifier":
        header = json.loads(bytes(np.asarray(arrays["header"], np.uint8)).decode("utf-8"))
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError("no d2_nucleus type classifier header")
        if int(header.get("version", 0)) > VERSION:
            raise ValueError(f"format version {header.get('version')} is newer than this d2_nucleus reads ({VERSION})")
        classes, colors, recipe = header["classes"], header["colors"], header["recipe"]
        if not classes or len(colors) != len(classes) or any(len(c) != 3 for c in colors):
            raise ValueError("class names and colours do not match")
        if not set(recipe["features"]) <= set(FEATURE_KINDS) or not recipe["features"]:
            raise ValueError(f"unknown features {recipe['features']}")
        mean, std = np.asarray(arrays["mean"], np.float64), np.asarray(arrays["std"], np.float64)
        layers = [(np.asarray(arrays[f"layer{i}_weight"], np.float32), np.asarray(arrays[f"layer{i}_bias"], np.float32))
                  for i in range(int(header["layers"]))]
        convs = [(np.asarray(arrays[f"conv{i}_weight"], np.float32), np.asarray(arrays[f"conv{i}_bias"], np.float32))
                 for i in range(int(header.get("convs", 0)))]
        if bool(convs) != ("patch" in recipe["features"]):
            raise ValueError("patch features and convolutions do not match")
        channels = 3
        for i, (w, b) in enumerate(convs):
            if w.ndim != 4 or w.shape[1:] != (channels, 3, 3) or b.shape != (w.shape[0],):
                raise ValueError(f"convolution {i} has shape {w.shape} / {b.shape}, expected inputs of {channels}")
            channels = w.shape[0]
        if convs:
            p = recipe["patch"]
            if int(p["px"]) < 2 or not float(p["um"]) > 0 or len(p["mean"]) != 3 or len(p["std"]) != 3:
                raise ValueError("bad patch recipe")
        dims = [len(mean) + (channels if convs else 0)] + [w.shape[0] for w, _ in layers]
        expected = int(recipe.get("box_dim", 0)) * sum(k in recipe["features"] for k in MODEL_FEATURES) + \
            len(recipe.get("measurement_names", MEASUREMENT_FEATURES)) * ("measurements" in recipe["features"])
        if not layers or mean.shape != std.shape or mean.ndim != 1 or len(mean) != expected or not (std > 0).all() \
                or not (len(mean) or convs):
            raise ValueError(f"normalisation arrays do not fit the recipe ({expected} features)")
        for i, (w, b) in enumerate(layers):
            if w.ndim != 2 or w.shape[1] != dims[i] or b.shape != (w.shape[0],):
                raise ValueError(f"layer {i} has shape {w.shape} / {b.shape}, expected inputs of {dims[i]}")
        if dims[-1] != len(classes):
            raise ValueError(f"the last layer gives {dims[-1]} outputs for {len(classes)} classes")
        return cls([str(c) for c in classes], [tuple(int(v) for v in c) for c in colors], recipe, mean, std, layers,
                   header.get("info") or {}, convs)
