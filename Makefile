# The two commands of mllm_nb. Both work from a fresh clone with nothing installed by hand:
#   make test   unit tests + every notebook under nbval, in offline demo mode, on the committed lock
#               (requirements/lock.txt); then the chat and chat-panel tests under ipywidgets 7.8 and ipykernel
#               6.29 (a Colab-like stack; a real kernel runs the panel there) in a second small venv without torch
#               (`make test-ipywidgets7` alone)
#   make demo   execute every notebook headless in demo mode -> build/demo/ (ipynb + html) + a summary
# CI (.ci/run) also runs the unit tests and notebooks on the newest releases the package admits (Python 3.12, as
# Colab: `make test-newest`), the unit tests on the oldest it declares (requirements/oldest.txt: `make test-oldest`)
# and the chat panel in a real browser (`make test-browser`: JupyterLab 4 + headless Chromium, tests/test_browser.py).
# `make lock` re-resolves pyproject.toml's ranges to today's newest releases and rewrites the locks.
PYTHON   ?= python3
PYTHON312 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) $(shell command -v python3.12))
VENV     ?= .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.mllm-nb-installed
LOCK     := requirements/lock.txt
# torch and torchvision as a pair: the processors of Qwen2-VL, LLaVA-OneVision and SmolVLM need torchvision
# (Colab has it). 2.14.1 + 0.29.1 are the newest pair pip takes from this machine's disk for Python 3.11;
# the package itself only asks for torch>=2.6 (Colab keeps its own torch).
TORCH_PAIR ?= torch==2.14.1 torchvision==0.29.1
# The ipywidgets-7 venv: only what the IPYW7_TESTS import (no torch: those tests
# skip). ipywidgets 7.8 goes in without its widgetsnbextension dependency, which is the classic notebook's
# JavaScript and pulls the whole notebook-6 server stack; its Python dependencies are in the lock instead.
# mllm_nb comes from this checkout through PYTHONPATH (no install, so nothing is written into the tree).
VENV7    ?= .venv-ipyw7
PY7      := $(VENV7)/bin/python
STAMP7   := $(VENV7)/.mllm-nb-installed
LOCK7    := requirements/lock-ipywidgets7.txt
IPYW7_REQUIREMENTS := ipython "ipykernel==6.29.*" traitlets comm ipython_genutils "jupyterlab_widgets<3" \
	pytest numpy pillow openai
IPYW7_TESTS := tests/test_widgets.py tests/test_chat.py tests/test_settings.py tests/test_streaming.py \
	tests/test_kernel_threads.py
# The newest and the oldest admitted releases (unit tests only; the notebooks run on the lock).
VENV_NEWEST ?= .venv-newest
VENV_OLDEST ?= .venv-oldest
OLDEST      := requirements/oldest.txt
# The browser test has its own target (test-browser) and its own venv: the unit-test runs leave it out.
UNIT_TESTS  := -m pytest tests -m "not browser" -p no:cacheprovider --timeout=900
NOTEBOOK_TESTS := notebooks --nbval-lax --nbval-current-env --nbval-cell-timeout=600 \
	--nbval-sanitize-with notebooks/nbval_sanitize.cfg
# The newest releases: the same, except that notebook 05's fine-tune percentages are compared by form only
# (training on other kernels moves them a point or two; tests/test_finetune_demo.py checks the targets there).
NOTEBOOK_TESTS_NEWEST := $(subst nbval_sanitize.cfg,nbval_sanitize_newest.cfg,$(NOTEBOOK_TESTS))
# The browser test: Debian's chromium + chromedriver (apt, skipped when both are there) and a small venv with
# JupyterLab 4, its ipywidgets frontend (jupyterlab_widgets, the version the main lock pairs with ipywidgets 8)
# and selenium, from requirements/lock-browser.txt. pytest runs there; the notebook's kernel runs .venv's Python.
VENV_BROWSER  ?= .venv-browser
PY_BROWSER    := $(VENV_BROWSER)/bin/python
STAMP_BROWSER := $(VENV_BROWSER)/.mllm-nb-installed
LOCK_BROWSER  := requirements/lock-browser.txt
BROWSER_REQUIREMENTS = "jupyterlab>=4,<5" "$$(grep -i '^jupyterlab_widgets==' $(LOCK))" selenium pytest pytest-timeout pillow
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# pip's machine-wide cap on torch (where there is one) would hide the newest torch from the newest run.
NO_CAP      := PIP_CONSTRAINT=/dev/null

export MLLM_NB_DEMO := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONHASHSEED := 0

.PHONY: test test-quick test-ipywidgets7 test-newest test-oldest test-browser browser-deps demo venv lock clean fixtures notebooks

venv: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

$(STAMP7): $(LOCK7)
	test -x $(PY7) || $(PYTHON) -m venv $(VENV7)
	$(PY7) -m pip install --quiet -r $(LOCK7)
	$(PY7) -m pip install --quiet --no-deps "ipywidgets==7.8.*"
	$(PY7) -c "import ipywidgets, sys; sys.exit(not ipywidgets.__version__.startswith('7.8'))"
	touch $(STAMP7)

test: $(STAMP) $(STAMP7)
	$(PY) tools/check_structure.py
	$(PY) $(UNIT_TESTS) $(NOTEBOOK_TESTS)
	$(MAKE) --no-print-directory test-ipywidgets7

# A quick run while developing: the unit tests without the slow ones (fixture training, `transformers serve`).
test-quick: $(STAMP)
	$(PY) -m pytest tests -m "not slow" -p no:cacheprovider

test-ipywidgets7: $(STAMP7)
	PYTHONPATH="$(CURDIR)" $(PY7) -m pytest $(IPYW7_TESTS) -p no:cacheprovider

# The chat panel in JupyterLab 4 under headless Chromium (tests/test_browser.py): install, then run that file only.
# Screenshots and what was observed: build/browser/.
test-browser: $(STAMP) $(STAMP_BROWSER) browser-deps
	MLLM_NB_KERNEL_PYTHON="$(CURDIR)/$(PY)" $(PY_BROWSER) -m pytest tests/test_browser.py -m browser \
		-p no:cacheprovider --timeout=300

browser-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		echo "chromium and chromedriver: already installed"; \
	else \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
			--no-install-recommends chromium chromium-driver >/dev/null; \
	fi
	@chromium --version 2>/dev/null && chromedriver --version  # (Debian's launcher script complains on stderr)

$(STAMP_BROWSER): $(LOCK_BROWSER)
	test -x $(PY_BROWSER) || $(PYTHON) -m venv $(VENV_BROWSER)
	$(PY_BROWSER) -m pip install --quiet -r $(LOCK_BROWSER)
	touch $(STAMP_BROWSER)

# Newest admitted releases of everything, on Python 3.12 (Colab's): a fresh venv each time, nothing pinned;
# the unit tests and the notebooks.
test-newest:
	test -n "$(PYTHON312)" || { echo "test-newest needs Python 3.12 (pyenv install 3.12)"; exit 1; }
	rm -rf $(VENV_NEWEST) && $(PYTHON312) -m venv $(VENV_NEWEST)
	$(NO_CAP) $(VENV_NEWEST)/bin/python -m pip install --quiet --upgrade pip
	$(NO_CAP) $(VENV_NEWEST)/bin/python -m pip install --quiet torchvision -e ".[test]"
	$(VENV_NEWEST)/bin/python -m pip list 2>/dev/null | grep -iE "^(torch|torchvision|transformers|bitsandbytes|accelerate|ipywidgets|ipykernel|tokenizers|huggingface.hub) "
	$(VENV_NEWEST)/bin/python $(UNIT_TESTS) $(NOTEBOOK_TESTS_NEWEST)
	rm -rf $(VENV_NEWEST)  # about 6 GB: CI's disk holds one such venv at a time besides .venv

# Oldest declared releases (requirements/oldest.txt pins each declared floor), on Python 3.11.
test-oldest:
	rm -rf $(VENV_OLDEST) && $(PYTHON) -m venv $(VENV_OLDEST)
	$(VENV_OLDEST)/bin/python -m pip install --quiet --upgrade pip
	$(NO_CAP) $(VENV_OLDEST)/bin/python -m pip install --quiet -r $(OLDEST) -e ".[test]"
	$(VENV_OLDEST)/bin/python -m pip list 2>/dev/null | grep -iE "^(torch|torchvision|transformers|bitsandbytes|accelerate|ipywidgets|ipykernel|tokenizers|huggingface.hub) "
	$(VENV_OLDEST)/bin/python $(UNIT_TESTS)
	rm -rf $(VENV_OLDEST)

# Re-resolve the declared ranges to today's releases and rewrite both locks (then run `make test`).
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet $(TORCH_PAIR) -e ".[test]"
	.venv-lock/bin/python -m pip freeze --exclude-editable | grep -v "^mllm-nb" > $(LOCK)
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet $(IPYW7_REQUIREMENTS)
	.venv-lock/bin/python -m pip freeze > $(LOCK7)
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet $(BROWSER_REQUIREMENTS)
	.venv-lock/bin/python -m pip freeze > $(LOCK_BROWSER)
	rm -rf .venv-lock
	@echo "wrote $(LOCK), $(LOCK7) and $(LOCK_BROWSER); run make test and make test-browser"

demo: $(STAMP)
	$(VENV)/bin/mllm-nb demo --out build/demo

# Maintenance: retrain the committed fixture models (seeded) and refresh the stored notebook outputs.
fixtures: $(STAMP)
	$(PY) -m fixtures.train_clip
	$(PY) -m fixtures.train_llava
	$(PY) -m fixtures.train_honeybee

notebooks: $(STAMP)
	$(PY) tools/refresh_notebooks.py

clean:
	rm -rf build .pytest_cache
