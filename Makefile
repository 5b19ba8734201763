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

.PHONY: install test demo bench clean-demo

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml tools/install_detectron2.py tools/patches/detectron2-v0.6-no-extension.patch
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	# imantics declares opencv-python; we keep the single headless cv2 from requirements.txt.
	$(PY) -m pip install -q --no-deps imantics==0.1.12
	$(PY) tools/install_detectron2.py
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q tests

# End to end on CPU: raw data -> COCO -> short from-scratch training -> --eval-only -> answer.json
demo: $(STAMP)
	@set -e; \
	raw="$(DATA)"; \
	if [ -z "$$raw" ]; then \
	  raw="$(DEMO_DIR)/raw"; \
	  $(PY) tools/make_synthetic.py --out "$$raw" --overwrite; \
	fi; \
	$(PY) tools/prepare_data.py --raw "$$raw" --out "$(DEMO_DIR)/prepared" --overwrite; \
	$(PY) tools/train_net.py --config-file $(DEMO_CONFIG) --data-root "$(DEMO_DIR)/prepared" \
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
	$(PY) bench/bench_postprocess.py
	$(PY) bench/bench_evaluation.py
	$(PY) bench/bench_train_speed.py --variants plain,mapper,bf16,recipe --config configs/scratch/mask_rcnn_R_50_FPN_scratch_gn.yaml \
	  MODEL.RESNETS.DEPTH 18 MODEL.RESNETS.RES2_OUT_CHANNELS 64
	$(PY) bench/bench_train_speed.py --variants plain,recipe

clean-demo:
	rm -rf $(DEMO_DIR)
