# -*- coding: utf-8 -*-
"""
The challenge submission: answer.json and answer.zip.

answer.json is a list of COCO results (``{"image_id", "category_id", "segmentation": {"size":
[h, w], "counts": str}, "score", "bbox": [x, y, w, h]}``, sorted by score within each image), made
by :func:`d2_nucleus.evaluation.coco_results.instances_to_coco_json`, the converter whose output
the evaluator scores; answer.zip holds it as ``answer.json`` at the top level.
"""
import io
import json
import zipfile
from typing import Dict, List, Optional

from ..utils.file_io import atomic_write, check_writable

__all__ = ["write_answer", "ANSWER_NAME"]

# The file name the challenge expects inside answer.zip.
ANSWER_NAME = "answer.json"


def write_answer(
    results: List[Dict], path: str, zip_path: Optional[str] = None, overwrite: bool = False
) -> None:
    """
    Write COCO results to ``path`` (JSON) and, if ``zip_path`` is given, also a zip archive that
    holds them as ``answer.json`` at its top level. Both writes are atomic.

    Raises:
        OutputExistsError: a target exists and ``overwrite`` is False (checked before writing).
    """
    data = json.dumps(results, separators=(",", ":")).encode("utf-8")
    targets = [path] + ([zip_path] if zip_path else [])
    for target in targets:
        check_writable(target, overwrite=overwrite)
    with atomic_write(path, overwrite=overwrite) as f:
        f.write(data)
    if zip_path:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(ANSWER_NAME, data)
        with atomic_write(zip_path, overwrite=overwrite) as f:
            f.write(buffer.getvalue())
