# -*- coding: utf-8 -*-
"""The images a prediction run reads: a folder, one image, or a test_img_ids.json."""
import logging
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence

from ..data.layout import image_dir
from ..data.raw import is_ignored_entry, parse_test_img_ids

__all__ = ["IMAGE_EXTENSIONS", "ImageItem", "list_inputs", "name_list", "unlisted_images"]

logger = logging.getLogger(__name__)

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


def _folder_images(folder: str) -> List[str]:
    """The image file names of ``folder``, sorted (hidden files and Jupyter "-checkpoint" copies left out)."""
    return sorted(
        n
        for n in os.listdir(folder)
        if n.lower().endswith(IMAGE_EXTENSIONS)
        and not is_ignored_entry(n)
        and os.path.isfile(os.path.join(folder, n))
    )


def unlisted_images(folder: str, items: Sequence[ImageItem]) -> List[str]:
    """The images of ``folder`` that ``items`` leave out (file names, sorted)."""
    listed = {os.path.basename(it.path) for it in items}
    return [n for n in _folder_images(folder) if n not in listed]


def name_list(names: Sequence[str], most: int = 10) -> str:
    """``names`` joined by commas, the first ``most`` of them and how many more."""
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def list_inputs(input_path: str, ids_path: Optional[str] = None, allow_missing: bool = False,
                subset: bool = False) -> List[ImageItem]:
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
        subset: with ``ids_path`` and a folder, predict only the images the id file lists even
            if the folder holds others (a warning names them); without it that is an error, so
            that a short challenge submission never looks complete.

    An id file is read by :func:`d2_nucleus.data.raw.parse_test_img_ids`, the strict parser data
    preparation uses: every ``file_name`` is a plain file name, so no entry can name a file
    outside the folders above (``../x.png`` or ``/etc/x.png`` are refused).

    Raises:
        FileNotFoundError: the input does not exist, or the id file names an absent image.
        ValueError: no images, a malformed id file (:class:`RawDataError`, naming the file), or
            ``--ids`` leaving out images of the folder (without ``subset``).
    """
    if not os.path.exists(input_path):
        raise FileNotFoundError(f"input {input_path!r} does not exist")
    listed_folder = None
    if ids_path is None and os.path.isfile(input_path) and input_path.lower().endswith(".json"):
        ids_path = input_path
        root = os.path.dirname(os.path.abspath(input_path))
        # raw layout (tools/make_synthetic.py, the download), prepared layout, or next to it
        folders = [os.path.join(root, "test"), image_dir(root, "test"), root]
    elif ids_path is not None:
        if not os.path.isdir(input_path):
            raise ValueError(f"with --ids, the input must be the folder of the images, got {input_path!r}")
        folders = [input_path]
        listed_folder = input_path  # --ids: the folder's other images would be left out
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
        left_out = unlisted_images(listed_folder, items) if listed_folder else []
        if left_out and not subset:
            raise ValueError(
                f"{ids_path} lists {len(items)} image(s) but {input_path} holds {len(left_out)} more, which "
                f"would be left out: {name_list(left_out)} (pass --subset to predict only the listed ones)"
            )
        if left_out:
            logger.warning("--subset: %d image(s) of %s that %s does not list are left out: %s",
                           len(left_out), input_path, ids_path, name_list(left_out))
        return items

    if os.path.isfile(input_path):
        return [ImageItem(input_path, 1)]
    names = _folder_images(input_path)
    if not names:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {input_path!r}")
    return [ImageItem(os.path.join(input_path, n), i + 1) for i, n in enumerate(names)]
