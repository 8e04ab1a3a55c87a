# The two commands of mllm_nb. Both work from a fresh clone with nothing installed by hand:
#   make test   unit tests + every notebook under nbval, in offline demo mode
#   make demo   execute every notebook headless in demo mode -> build/demo/ (ipynb + html) + a summary
# `make test` also runs the chat and chat-panel tests under ipywidgets 7.8 (Colab's version) in a
# second small venv without torch (`make test-ipywidgets7` alone); its torch tests are skipped there.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.mllm-nb-installed
# Development/CI pin: a CPU wheel of torch. The package itself only asks for torch>=2.4 (Colab keeps its own).
TORCH_PIN ?= torch==2.13.0
# The ipywidgets-7 venv: only what tests/test_widgets.py and tests/test_chat.py import (no torch: those tests
# skip). ipywidgets 7.8 goes in without its widgetsnbextension dependency, which is the classic notebook's
# JavaScript and pulls the whole notebook-6 server stack; its Python dependencies are listed instead.
# mllm_nb comes from this checkout through PYTHONPATH (no install, so nothing is written into the tree).
VENV7  ?= .venv-ipyw7
PY7    := $(VENV7)/bin/python
STAMP7 := $(VENV7)/.mllm-nb-installed
IPYW7_REQUIREMENTS := ipython ipykernel traitlets comm ipython_genutils "jupyterlab_widgets<3" \
	pytest numpy pillow openai
IPYW7_TESTS := tests/test_widgets.py tests/test_chat.py

export MLLM_NB_DEMO := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONHASHSEED := 0

.PHONY: test test-ipywidgets7 demo venv clean fixtures notebooks

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[test]" "$(TORCH_PIN)"
	touch $(STAMP)

$(STAMP7): Makefile
	test -x $(PY7) || $(PYTHON) -m venv $(VENV7)
	$(PY7) -m pip install --quiet $(IPYW7_REQUIREMENTS)
	$(PY7) -m pip install --quiet --no-deps "ipywidgets==7.8.*"
	$(PY7) -c "import ipywidgets, sys; sys.exit(not ipywidgets.__version__.startswith('7.8'))"
	touch $(STAMP7)

test: $(STAMP) $(STAMP7)
	$(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env --nbval-cell-timeout=600 \
		--nbval-sanitize-with notebooks/nbval_sanitize.cfg -p no:cacheprovider
	$(MAKE) --no-print-directory test-ipywidgets7

test-ipywidgets7: $(STAMP7)
	PYTHONPATH="$(CURDIR)" $(PY7) -m pytest $(IPYW7_TESTS) -p no:cacheprovider

demo: $(STAMP)
	$(VENV)/bin/mllm-nb demo --out build/demo

# Maintenance: retrain the committed fixture models (seeded) and refresh the stored notebook outputs.
fixtures: $(STAMP)
	$(PY) -m mllm_nb.demo.train_clip
	$(PY) -m mllm_nb.demo.train_llava
	$(PY) -m mllm_nb.demo.train_honeybee

notebooks: $(STAMP)
	$(PY) tools/refresh_notebooks.py

clean:
	rm -rf build .pytest_cache
