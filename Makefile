# d2_nucleus: `make demo` (end-to-end run on generated data) and `make test`.
# Both create .venv if missing and install everything into it; re-running reinstalls nothing
# unless requirements.txt, pyproject.toml or the Detectron2 installer changed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.d2_nucleus-installed

# make demo DATA=path/to/raw/dataset runs the same job on a real raw dataset.
DATA ?=
DEMO_DIR ?= demo
DEMO_CONFIG ?= configs/demo/mask_rcnn_R_18_FPN_demo.yaml
DEMO_ITERS ?= 300

# The CPU recipe on the real dataset (BENCHMARKS.md): make recipe-val DATA=...; make recipe-answer
RECIPE_CONFIG ?= configs/cpu/mask_rcnn_R_18_FPN_cpu_gn.yaml
RECIPE_DIR ?= output/cpu_recipe
SLIDE_TEST_SCALE ?= 1.0
FINETUNE_ITERS ?= 150
FROZEN_ITERS ?= 300
FROZEN_DECAY ?= 200
# make finetune PREPARED=... (tools/import_annotations.py --out) [WEIGHTS=...] [FINETUNE_DIR=...]
FINETUNE_CONFIG ?= configs/cpu/finetune_R_18_FPN_cpu_gn.yaml
FINETUNE_DIR ?= output/finetune
WEIGHTS ?= $(RECIPE_DIR)/train/model_final.pth
PREPARED ?=

.PHONY: install test demo bench clean-demo recipe-val recipe-answer recipe-slides finetune

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml tools/install_detectron2.py tools/patches/detectron2-v0.6-no-extension.patch
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	# imantics declares opencv-python; we keep the single headless cv2 from requirements.txt.
	$(PY) -m pip install -q --no-deps imantics==0.1.12
	$(PY) tools/install_detectron2.py
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	# the C++ CPU kernels (RoIAlign, GroupNorm, anchor IoU), compiled once and cached; without a compiler
	# d2_nucleus uses PyTorch's kernels instead
	$(PY) tools/build_native.py || echo "make: the C++ kernels were not built; d2_nucleus uses PyTorch's"
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q --durations=15 tests

# End to end on CPU: raw data -> COCO -> short from-scratch training -> --eval-only -> answer.json
demo: $(STAMP)
	@set -e; \
	raw="$(DATA)"; \
	if [ -z "$$raw" ]; then \
	  raw="$(DEMO_DIR)/raw"; \
	  $(PY) tools/make_synthetic.py --out "$$raw" --overwrite; \
	fi; \
	$(PY) tools/prepare_data.py --raw "$$raw" --out "$(DEMO_DIR)/prepared" --overwrite; \
	$(PY) tools/train_net.py --config-file $(DEMO_CONFIG) --data-root "$(DEMO_DIR)/prepared" --overwrite \
	  SOLVER.MAX_ITER $(DEMO_ITERS) OUTPUT_DIR "$(DEMO_DIR)/output"; \
	$(PY) tools/train_net.py --config-file $(DEMO_CONFIG) --data-root "$(DEMO_DIR)/prepared" --eval-only \
	  MODEL.WEIGHTS "$(DEMO_DIR)/output/model_final.pth" OUTPUT_DIR "$(DEMO_DIR)/output"; \
	$(PY) tools/predict.py --config-file $(DEMO_CONFIG) --weights "$(DEMO_DIR)/output/model_final.pth" \
	  --input "$(DEMO_DIR)/prepared/test_img_ids.json" --output "$(DEMO_DIR)/answer.json" --zip \
	  --vis-dir "$(DEMO_DIR)/vis" --geojson-dir "$(DEMO_DIR)/geojson" --labels-dir "$(DEMO_DIR)/labels" --overwrite; \
	echo "demo: wrote $(DEMO_DIR)/answer.json, $(DEMO_DIR)/answer.zip, overlays in $(DEMO_DIR)/vis"

# Each benchmark prints its table; BENCHMARKS.md records them. bench_train_speed takes ~10 minutes.
bench: $(STAMP)
	$(PY) bench/bench_mask2coco.py
	$(PY) bench/bench_import.py
	$(PY) bench/bench_postprocess.py
	$(PY) bench/bench_evaluation.py
	$(PY) bench/bench_measurements.py
	$(PY) bench/bench_train_speed.py --variants plain,mapper,bf16,recipe --config configs/scratch/mask_rcnn_R_50_FPN_scratch_gn.yaml \
	  MODEL.RESNETS.DEPTH 18 MODEL.RESNETS.RES2_OUT_CHANNELS 64
	$(PY) bench/bench_train_speed.py --variants plain,recipe

clean-demo:
	rm -rf $(DEMO_DIR)

# Prepare DATA, train the CPU recipe on nucleus_train (~80-90 min on 2 cores), evaluate on nucleus_val.
recipe-val: $(STAMP)
	@test -n "$(DATA)" || { echo "usage: make recipe-val DATA=path/to/raw/dataset"; exit 2; }
	test -d "$(RECIPE_DIR)/prepared" || $(PY) tools/prepare_data.py --raw "$(DATA)" --out "$(RECIPE_DIR)/prepared"
	$(PY) tools/train_net.py --config-file $(RECIPE_CONFIG) --data-root "$(RECIPE_DIR)/prepared" \
	  OUTPUT_DIR "$(RECIPE_DIR)/train"

# Then: continue on nucleus_all_train (train + val) at the schedule's middle LR (0.002), and write the
# challenge submission for the test images.
recipe-answer: $(STAMP)
	$(PY) tools/train_net.py --config-file $(RECIPE_CONFIG) --data-root "$(RECIPE_DIR)/prepared" \
	  MODEL.WEIGHTS "$(RECIPE_DIR)/train/model_final.pth" DATASETS.TRAIN '("nucleus_all_train",)' DATASETS.TEST '()' \
	  SOLVER.BASE_LR 0.002 SOLVER.WARMUP_ITERS 0 SOLVER.STEPS '()' SOLVER.MAX_ITER $(FINETUNE_ITERS) \
	  OUTPUT_DIR "$(RECIPE_DIR)/all_train"
	$(PY) tools/predict.py --config-file $(RECIPE_CONFIG) --weights "$(RECIPE_DIR)/all_train/model_final.pth" \
	  --input "$(RECIPE_DIR)/prepared/test_img_ids.json" --output "$(RECIPE_DIR)/answer.json" --zip --overwrite

# A model for whole slides (after recipe-val): the backbone's GroupNorm statistics frozen on the
# training images (tiles then give the nuclei whole images give), then FROZEN_ITERS iterations
# with them, LR 0.002 then 0.0002 from FROZEN_DECAY (~15-20 min; recovers most of the accuracy freezing costs: BENCHMARKS.md "Seams").
# Slides are segmented at SLIDE_TEST_SCALE x the model's resolution (default 1.0: native, the speed,
# memory and seams of BENCHMARKS.md; 1.25 = the recipe's test scale, +2 AJI points for ~1.26x the time).
# Use it with: tools/segment_slides.py --config-file $(RECIPE_DIR)/frozen/model_frozen_gn.yaml
#   --weights $(RECIPE_DIR)/frozen_ft/model_final.pth ...
recipe-slides: $(STAMP)
	$(PY) tools/freeze_group_norm.py --config-file $(RECIPE_CONFIG) --weights "$(RECIPE_DIR)/train/model_final.pth" \
	  --data-root "$(RECIPE_DIR)/prepared" --output "$(RECIPE_DIR)/frozen/model_frozen_gn.pth" --overwrite \
	  INPUT.TEST_SCALE $(SLIDE_TEST_SCALE)
	$(PY) tools/train_net.py --config-file "$(RECIPE_DIR)/frozen/model_frozen_gn.yaml" --data-root "$(RECIPE_DIR)/prepared" \
	  SOLVER.BASE_LR 0.002 SOLVER.WARMUP_ITERS 20 SOLVER.STEPS '($(FROZEN_DECAY),)' \
	  SOLVER.MAX_ITER $(FROZEN_ITERS) SOLVER.CHECKPOINT_PERIOD 100 OUTPUT_DIR "$(RECIPE_DIR)/frozen_ft"

# Adapt a trained model (default: recipe-val's) to your own annotations, imported first with
# tools/import_annotations.py --out PREPARED (README "Training on your own annotations"): the
# fine-tune schedule (lower LR, 300 iterations, a checkpoint every 50), evaluated on PREPARED's val.
finetune: $(STAMP)
	@test -n "$(PREPARED)" || { echo "usage: make finetune PREPARED=path/to/imported/layout [WEIGHTS=model.pth] [FINETUNE_DIR=dir]"; exit 2; }
	$(PY) tools/train_net.py --config-file $(FINETUNE_CONFIG) --data-root "$(PREPARED)" \
	  MODEL.WEIGHTS "$(WEIGHTS)" OUTPUT_DIR "$(FINETUNE_DIR)"
