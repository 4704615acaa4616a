# `make run`: set everything up and serve the app at http://localhost:8501 on a ready demo workspace.
# `make test`: set everything up and run the whole test suite (the browser tests need Debian's chromium).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.lock | cksum | cut -d' ' -f1)
PORT ?= 8501

.PHONY: run test screenshots setup demo lint bench clean-venv lock

setup: $(STAMP)

# requirements.lock: every package, its version and its files' hashes (pip refuses any other file)
$(STAMP): requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	rm -f $(VENV)/.installed-* && touch $@

# the lock again from requirements*.txt (what a person edits), with pip-tools in a venv of its own
lock:
	test -x .venv-lock/bin/pip-compile || { $(PYTHON) -m venv .venv-lock && .venv-lock/bin/pip install --quiet pip-tools==7.7.0; }
	.venv-lock/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
		--no-emit-find-links -o requirements.lock requirements-dev.txt

demo: $(STAMP)
	$(PY) -m core demo

run: demo
	$(PY) -m streamlit run streamlit_app.py --server.port $(PORT) --server.headless true

# The browser walk runs beside the rest of the suite: it mostly waits on the app and the browser,
# so two processes share the two cores. `pytest` alone runs everything, one test after another.
test: $(STAMP)
	@log=$$(mktemp); \
	$(PY) -m pytest -m browser -p no:cacheprovider > $$log 2>&1 & walk=$$!; \
	$(PY) -m pytest -m "not browser"; rest=$$?; \
	wait $$walk; browser=$$?; \
	echo "--- the browser walk, run beside the tests above ---"; cat $$log; rm -f $$log; \
	test $$rest -eq 0 && { test $$browser -eq 0 || test $$browser -eq 5; }  # 5: skipped, no chromium here (CI fails instead)

# the browser walk, saving its screenshots in docs/screenshots/ (make test keeps them in a temporary folder)
screenshots: $(STAMP)
	SCREENSHOT_DIR=$(CURDIR)/docs/screenshots $(PY) -m pytest tests/test_browser.py

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) bench/gather_bench.py

clean-venv:
	rm -rf $(VENV)
