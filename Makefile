# The two commands of mllm_nb. Both work from a fresh clone with nothing installed by hand:
#   make test   unit tests + every notebook under nbval, in offline demo mode
#   make demo   execute every notebook headless in demo mode -> build/demo/ (ipynb + html) + a summary
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.mllm-nb-installed
# Development/CI pin: a CPU wheel of torch. The package itself only asks for torch>=2.4 (Colab keeps its own).
TORCH_PIN ?= torch==2.13.0

export MLLM_NB_DEMO := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONHASHSEED := 0

.PHONY: test demo venv clean fixtures notebooks

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[test]" "$(TORCH_PIN)"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env --nbval-cell-timeout=600 \
		-p no:cacheprovider

demo: $(STAMP)
	$(VENV)/bin/mllm-nb demo --out build/demo

# Maintenance: retrain the committed fixture models (seeded) and refresh the stored notebook outputs.
fixtures: $(STAMP)
	$(PY) -m mllm_nb.demo.train_clip

notebooks: $(STAMP)
	$(PY) tools/refresh_notebooks.py

clean:
	rm -rf build .pytest_cache
