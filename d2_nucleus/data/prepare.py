# -*- coding: utf-8 -*-
"""
Raw dataset -> the prepared layout that training, evaluation and prediction read::

    <out>/nucleus_data/{all_train,train,val,test}/<file>.png   hard links to the raw images (or copies)
    <out>/annotations/instance_{all_train,train,val,test}.json  COCO; test: images only
    <out>/test_img_ids.json                                     copied from the raw dataset
    <out>/classes.txt                                           "nucleus"
    <out>/split.json                                            the train/val split and its seed

Image ids: 1..N in sorted image-ID order of all_train; train and val keep them. Annotation ids are
1..N within each file. Every input is checked before anything is written, and the layout is built in
a temporary folder that replaces ``<out>`` only at the end.
"""
import logging
import os
import shutil
from typing import Dict, Iterable, List, Optional, Sequence

from ..utils.file_io import (
    OutputExistsError,
    atomic_output_dir,
    atomic_write_json,
    check_not_input,
    check_target,
    check_writable,
    check_writable_dir,
    link_or_copy,
)
from .layout import (  # the layout is spelled in .layout
    ANNOTATIONS_DIR,
    CLASSES,
    CLASSES_FILE,
    IMAGES_DIR,
    SOURCE_FILE,
    SPLIT_FILE,
    SPLITS,
    TEST_IDS_FILE,
    annotation_file,
    image_dir,
)
from .mask2coco import coco_dict, masks_to_coco
from .raw import RawDataError, scan_train
from .report import DataReport
from .split import load_split, split_dict
from .testset import testset_to_coco

__all__ = [
    "SPLITS",
    "prepare_dataset",
    "subset_coco",
    "write_split",
    "convert_split",
    "write_test_list",
    "check_prepared_out",
]

logger = logging.getLogger(__name__)



def subset_coco(coco: Dict, image_ids: Iterable[int], description: str = "") -> Dict:
    """The images of ``coco`` with the given ids (ids kept) and their annotations (renumbered 1..N)."""
    keep = set(image_ids)
    images = [img for img in coco["images"] if img["id"] in keep]
    anns = [{k: v for k, v in a.items() if k != "id"} for a in coco["annotations"] if a["image_id"] in keep]
    return coco_dict(images, anns, description)


def _check_raw_out(raw_root: str, out: str, inputs: Sequence[Optional[str]] = ()) -> None:
    """Whatever ``--overwrite``, before anything else: ``out`` (the layout, or a sub-step's file) is
    neither inside the raw dataset nor holding it (symlinks resolved), nor one of ``inputs``."""
    check_not_input([out], [raw_root] + list(inputs), outside=True)


# What prepare_dataset (and an import: source.json) writes into <out>; --overwrite replaces only a
# folder holding nothing else.
_LAYOUT_FILES = (TEST_IDS_FILE, CLASSES_FILE, SPLIT_FILE, SOURCE_FILE)


def _foreign_entries(out: str) -> List[str]:
    """Entries of an existing ``out`` that are not part of the prepared layout (module docstring)."""
    if not os.path.isdir(out) or os.path.islink(out):
        return [out]
    foreign = []
    for name in sorted(os.listdir(out)):
        path = os.path.join(out, name)
        if name in _LAYOUT_FILES and os.path.isfile(path):
            continue
        if name == ANNOTATIONS_DIR and os.path.isdir(path):
            expected = {os.path.basename(annotation_file(out, s)) for s in SPLITS}
            foreign += [os.path.join(path, n) for n in sorted(os.listdir(path))
                        if n not in expected or not os.path.isfile(os.path.join(path, n))]
            continue
        if name == IMAGES_DIR and os.path.isdir(path):
            for split in sorted(os.listdir(path)):
                folder = os.path.join(path, split)
                if split not in SPLITS or not os.path.isdir(folder):
                    foreign.append(folder)
                    continue
                foreign += [os.path.join(folder, n) for n in sorted(os.listdir(folder))
                            if not os.path.isfile(os.path.join(folder, n))]
            continue
        foreign.append(path)
    return foreign


def check_prepared_out(out: str, overwrite: bool) -> None:
    """
    Before any work: ``out`` can be created and, if it exists, may be replaced (with ``overwrite``,
    only when it holds a prepared layout and nothing else).
    """
    check_target(out, overwrite)
    # atomic_output_dir builds the layout beside out, in its parent folder
    check_writable_dir(os.path.dirname(os.path.abspath(out)))
    if overwrite and os.path.lexists(out) and (not os.path.isdir(out) or os.listdir(out)):
        foreign = _foreign_entries(out)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise OutputExistsError(
                f"{out}: --overwrite replaces only a prepared layout, but it holds other files ({shown}); "
                "move them away or choose another --out"
            )


def _description(split: str, fmt: str) -> str:
    return f"d2_nucleus nuclei, split {split}, {fmt} masks"


def prepare_dataset(
    raw_root: str,
    out: str,
    ratio: float = 0.2,
    seed: int = 0,
    fmt: str = "rle",
    workers: Optional[int] = None,
    overwrite: bool = False,
    progress: bool = True,
) -> DataReport:
    """
    Build the prepared layout (module docstring) from a raw dataset, all or nothing.

    Args:
        ratio, seed: the val share and the split seed (:func:`split.split_image_ids`).
        fmt: "rle" (pixel-exact, default) or "polygon" (the seed's imantics polygons).
        workers: processes for the mask conversion (default all cores).
        overwrite: replace an existing ``out`` that holds a prepared layout and nothing else;
            without it an existing ``out`` is an error and is left untouched.

    Raises:
        RawDataError: bad raw input (the message names the file and the problem).
        FileExistsError: ``out`` exists and not ``overwrite``, or holds files this function did
            not write.
        PermissionError, NotADirectoryError: ``out`` cannot be written (checked first).
        ValueError: bad arguments.
    """
    _check_raw_out(raw_root, out)
    check_prepared_out(out, overwrite)
    train_set = scan_train(raw_root)
    report = DataReport(ignored_entries=train_set.ignored_entries)
    for msg in train_set.warnings:
        report.warn("layout", msg)
    # The test list is checked before the long conversion, so its errors come quickly.
    test_coco, test_report = testset_to_coco(raw_root)
    report.merge(test_report)
    split = split_dict([r.image_id for r in train_set.images], ratio, seed)
    logger.info(
        "%d training images (%d train, %d val; ratio %s, seed %s), %d masks, %d test images",
        len(train_set.images), len(split["train"]), len(split["val"]), ratio, seed,
        train_set.num_masks, len(test_coco["images"]),
    )
    image_ids = {r.image_id: i for i, r in enumerate(train_set.images, start=1)}
    all_coco, conv_report = masks_to_coco(
        train_set.images, [image_ids[r.image_id] for r in train_set.images], fmt, workers, progress,
        _description("all_train", fmt),
    )
    report.merge(conv_report)
    cocos = {
        "all_train": all_coco,
        "train": subset_coco(all_coco, [image_ids[i] for i in split["train"]], _description("train", fmt)),
        "val": subset_coco(all_coco, [image_ids[i] for i in split["val"]], _description("val", fmt)),
        "test": test_coco,
    }
    sources = {r.image_id + ".png": r.image_file for r in train_set.images}
    sources.update({e["file_name"]: os.path.join(raw_root, "test", e["file_name"]) for e in test_coco["images"]})

    linked = copied = 0
    with atomic_output_dir(out, overwrite) as tmp:
        os.makedirs(os.path.join(tmp, ANNOTATIONS_DIR))
        for name in SPLITS:
            atomic_write_json(annotation_file(tmp, name), cocos[name])
            folder = image_dir(tmp, name)
            os.makedirs(folder)
            for img in cocos[name]["images"]:
                if link_or_copy(sources[img["file_name"]], os.path.join(folder, img["file_name"])):
                    linked += 1
                else:
                    copied += 1
        shutil.copyfile(os.path.join(raw_root, TEST_IDS_FILE), os.path.join(tmp, TEST_IDS_FILE))
        with open(os.path.join(tmp, CLASSES_FILE), "w") as f:
            f.write("\n".join(CLASSES) + "\n")
        atomic_write_json(os.path.join(tmp, SPLIT_FILE), split)
    logger.info("images: %d hard-linked, %d copied (no hard link possible)", linked, copied)
    return report


def write_split(raw_root: str, out_file: str, ratio: float = 0.2, seed: int = 0, overwrite: bool = False) -> Dict:
    """Sub-step: write split.json ({"seed", "ratio", "method", "train", "val"}) for a raw dataset."""
    _check_raw_out(raw_root, out_file)
    check_writable(out_file, overwrite)
    train_set = scan_train(raw_root)
    split = split_dict([r.image_id for r in train_set.images], ratio, seed)
    atomic_write_json(out_file, split, overwrite)
    return split


def convert_split(
    raw_root: str,
    out_file: str,
    subset: str = "all_train",
    split_file: Optional[str] = None,
    ratio: float = 0.2,
    seed: int = 0,
    fmt: str = "rle",
    workers: Optional[int] = None,
    overwrite: bool = False,
    progress: bool = True,
) -> DataReport:
    """
    Sub-step: masks -> COCO json for one of all_train / train / val. Image ids are those of the full
    pipeline (position in sorted all_train order); train/val membership comes from ``split_file``
    (a split.json) or else from ``ratio`` and ``seed``.
    """
    if subset not in ("all_train", "train", "val"):
        raise ValueError(f"subset must be all_train, train or val, got {subset!r}")
    _check_raw_out(raw_root, out_file, [split_file])
    check_writable(out_file, overwrite)
    train_set = scan_train(raw_root)
    report = DataReport(ignored_entries=train_set.ignored_entries)
    for msg in train_set.warnings:
        report.warn("layout", msg)
    image_ids = {r.image_id: i for i, r in enumerate(train_set.images, start=1)}
    if subset == "all_train":
        chosen = list(image_ids)
    else:
        split = load_split(split_file) if split_file else split_dict(list(image_ids), ratio, seed)
        unknown = sorted((set(split["train"]) | set(split["val"])) - set(image_ids))
        if unknown:
            raise RawDataError(split_file or raw_root, f"split names images absent from the raw dataset: {unknown[:5]}")
        chosen = sorted(split[subset])
    records = train_set.by_id()
    coco, conv_report = masks_to_coco(
        [records[i] for i in chosen], [image_ids[i] for i in chosen], fmt, workers, progress,
        _description(subset, fmt),
    )
    report.merge(conv_report)
    atomic_write_json(out_file, coco, overwrite)
    return report


def write_test_list(raw_root: str, out_file: str, overwrite: bool = False) -> DataReport:
    """Sub-step: test_img_ids.json + test/ -> COCO image list (instance_test.json)."""
    _check_raw_out(raw_root, out_file)
    check_writable(out_file, overwrite)
    coco, report = testset_to_coco(raw_root)
    atomic_write_json(out_file, coco, overwrite)
    return report
