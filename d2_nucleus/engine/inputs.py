# -*- coding: utf-8 -*-
"""The images a prediction run reads: a folder, one image, or a test_img_ids.json."""
import os
from dataclasses import dataclass
from typing import List, Optional

from ..data.layout import image_dir
from ..data.raw import is_ignored_entry, parse_test_img_ids

__all__ = ["IMAGE_EXTENSIONS", "ImageItem", "list_inputs"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass
class ImageItem:
    """One input image: its file, the COCO image id it gets, and its expected size if known."""

    path: str
    image_id: int
    height: Optional[int] = None
    width: Optional[int] = None

    @property
    def stem(self) -> str:
        return os.path.splitext(os.path.basename(self.path))[0]


def list_inputs(input_path: str, ids_path: Optional[str] = None, allow_missing: bool = False) -> List[ImageItem]:
    """
    The images to predict.

    Args:
        input_path: a folder of images, one image, or a ``test_img_ids.json``. For the latter,
            images are looked up in ``test/`` next to it (raw layout), in
            ``nucleus_data/test/`` (tools/prepare_data.py's layout), then next to it.
        ids_path: a ``test_img_ids.json`` whose ``file_name`` s are looked up in ``input_path``
            (a folder); the image ids come from it. Without ids, images get ids 1, 2, ... in
            the sorted order of their file names (hidden files and Jupyter "-checkpoint"
            copies are ignored).
        allow_missing: return images the id file names but which do not exist (their reading
            fails later) instead of raising.

    An id file is read by :func:`d2_nucleus.data.raw.parse_test_img_ids`, the strict parser data
    preparation uses: every ``file_name`` is a plain file name, so no entry can name a file
    outside the folders above (``../x.png`` or ``/etc/x.png`` are refused).

    Raises:
        FileNotFoundError: the input does not exist, or the id file names an absent image.
        ValueError: no images, or a malformed id file (:class:`RawDataError`, naming the file).
    """
    if not os.path.exists(input_path):
        raise FileNotFoundError(f"input {input_path!r} does not exist")
    if ids_path is None and os.path.isfile(input_path) and input_path.lower().endswith(".json"):
        ids_path = input_path
        root = os.path.dirname(os.path.abspath(input_path))
        # raw layout (tools/make_synthetic.py, the download), prepared layout, or next to it
        folders = [os.path.join(root, "test"), image_dir(root, "test"), root]
    elif ids_path is not None:
        if not os.path.isdir(input_path):
            raise ValueError(f"with --ids, the input must be the folder of the images, got {input_path!r}")
        folders = [input_path]
    else:
        folders = None

    if ids_path is not None:
        items = []
        for entry in parse_test_img_ids(ids_path):
            name = entry["file_name"]  # a plain file name (checked by the parser)
            candidates = [os.path.join(d, name) for d in folders]
            path = next((p for p in candidates if os.path.isfile(p)), None)
            if path is None:
                if not allow_missing:
                    raise FileNotFoundError(
                        f"{ids_path} names {name!r}, which is not in {' or '.join(map(repr, folders))}"
                    )
                path = candidates[0]
            items.append(ImageItem(path, entry["id"], entry["height"], entry["width"]))
        return items

    if os.path.isfile(input_path):
        return [ImageItem(input_path, 1)]
    names = sorted(
        n
        for n in os.listdir(input_path)
        if n.lower().endswith(IMAGE_EXTENSIONS)
        and not is_ignored_entry(n)  # hidden files, Jupyter "-checkpoint" copies
        and os.path.isfile(os.path.join(input_path, n))
    )
    if not names:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {input_path!r}")
    return [ImageItem(os.path.join(input_path, n), i + 1) for i, n in enumerate(names)]
