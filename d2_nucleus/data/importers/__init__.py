# -*- coding: utf-8 -*-
"""
Annotation importers: one module a format, each turning files or folders into
:class:`~.source.SourceImage` records that :func:`d2_nucleus.data.importing.import_annotations`
writes into the prepared layout (rasterised by :mod:`..rasterize`, resampled by :mod:`..resample`).
"""
from . import aperio_xml, coco, geojson, label_images
from .source import Nucleus, SourceImage

__all__ = ["IMPORTERS", "FORMATS", "Nucleus", "SourceImage"]

#: --format name -> scan(inputs, images=None) -> [SourceImage]
IMPORTERS = {
    "aperio-xml": aperio_xml.scan,
    "geojson": geojson.scan,
    "label-image": label_images.scan,
    "coco": coco.scan,
}
FORMATS = tuple(IMPORTERS)
