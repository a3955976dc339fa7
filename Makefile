# Fresh-machine setup and the two jobs the README names. Every target is idempotent.
PY := .venv/bin/python
TORCH := torch==2.13.0

.PHONY: setup demo test
setup: .venv/.installed

.venv/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)          # pinned first: an unpinned torch pulls CUDA wheels
	$(PY) -m pip install -q -e '.[test,depth,diffusion,mesh,cluster]'   # every optional extra, so none of their tests skip
	bash scripts/system_deps.sh               # chromium (browser tests), splat-transform (export tests)
	touch $@

demo: setup
	.venv/bin/recon train data/demo --views 8 --iters 2000 --out outputs/demo --overwrite

test: setup
	.venv/bin/ruff check .
	.venv/bin/lint-imports
	.venv/bin/mypy
	$(PY) -m pytest -q tests
