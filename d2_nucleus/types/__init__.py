# -*- coding: utf-8 -*-
"""
Nucleus types from point annotations (``tools/train_types.py``, ``tools/eval_types.py``,
``tools/predict.py --types``): readers of clicked centres (:mod:`.points`), pairing
(:mod:`.matching`) and the field's metrics (:mod:`.metrics`), per-nucleus features
(:mod:`.features`), the classifier and its file (:mod:`.classifier`), training (:mod:`.training`),
segmentation of annotated images (:mod:`.detect`) and types in the outputs (:mod:`.outputs`).
Importing the package loads neither torch nor Detectron2.
"""
