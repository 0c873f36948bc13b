# One entry point for everything. `make run` and `make test` are the two set-up commands:
# each creates .venv and installs what it needs on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MODEL_BASE_PATH ?= $(CURDIR)/my_image_classifier
KERAS_MODEL := scripts/inception.keras
# MODELS="InceptionV3 MobileNetV2": serve these keras.applications models (Keras' names) side by
# side instead of the tutorial's ImageClassifier, each at /v1/models/<name lowercased>/predict.
# Each is kept as $(MODEL_REPOSITORY)/<name>.keras and exported to $(MODEL_REPOSITORY)/<name>/.
MODELS ?=
MODEL_REPOSITORY ?= $(CURDIR)/models
GRPC_PORT ?= 8500
# What auto_cmd serves and where: the same for `run` and for its pre-flight check.
AUTO_CMD_ARGS = $(if $(MODELS),$(foreach m,$(MODELS),--model $(m)=$(MODEL_REPOSITORY)/$(m)),--model-base-path \
  $(MODEL_BASE_PATH)) --grpc-port $(GRPC_PORT) $(if $(REST_API_PORT),--rest-api-port=$(REST_API_PORT)) \
  $(if $(GATEWAY_PORT),--gateway-port=$(GATEWAY_PORT))

.PHONY: run ports test test-fast bench loadtest model export system-deps python-venv venv clean

# Both servers up on 127.0.0.1 (model server REST :9000 and gRPC :$(GRPC_PORT), gateway :5000), ready
# for a sample request. MODEL_SERVER_ARGS="--enable_batching ..." adds model server flags
# (scripts/auto_cmd.py reads it); GRPC_PORT=0 turns gRPC off. REST_API_PORT=9001 / GATEWAY_PORT=5001
# pick other ports (when one is busy, `ports` says which and how before any download or export).
run: venv ports $(if $(MODELS),$(addprefix model-,$(MODELS)),model)
	$(PY) scripts/auto_cmd.py $(AUTO_CMD_ARGS)

# A busy port ends `make run` at once with one line (port, holder, variable to change), not after
# a download and an export. Run's prerequisites are built one at a time, so under -j too `ports`
# finishes before `model` starts (make 4.4+ serialises only run's; older makes the whole invocation).
.NOTPARALLEL: run
ports: venv
	$(PY) scripts/auto_cmd.py --check-ports $(AUTO_CMD_ARGS)

# The whole test suite (what .ci/run calls).
test: venv system-deps
	$(PY) -m pytest

# Unit and handler-level tests only, under a minute: no process, no real server, no InceptionV3 or
# other full-size network, no browser (tests that start one are marked e2e; tests/conftest.py fails a test that forgets).
test-fast: venv
	$(PY) -m pytest -m "not e2e and not inception and not applications and not browser"

# No system-deps: the benchmark needs neither Redis nor Chromium.
bench: venv
	$(PY) -m bench

loadtest: venv
	$(PY) -m bench.loadtest

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-gateway.txt pyproject.toml
	test -x $(PY) || { $(MAKE) --no-print-directory python-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps tensorflow-serving-api==2.21.0
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# Debian and Ubuntu ship venv's ensurepip in its own package (python3.X-venv), without which
# `python3 -m venv` fails: install it the way system-deps installs Redis, or say what to install.
python-venv:
	@command -v $(PYTHON) >/dev/null || { \
	  echo "error: $(PYTHON) not found; install Python 3.10+ or set PYTHON=/path/to/python3" >&2; exit 1; }
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || { \
	  PKG=$$($(PYTHON) -c 'import sys; print("python3.%d-venv" % sys.version_info[1])'); \
	  if command -v apt-get >/dev/null; then \
	    echo "$(PYTHON) cannot create a virtual environment (no ensurepip): installing $$PKG (Debian package)..."; \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$PKG; \
	  else \
	    echo "error: $(PYTHON) cannot create a virtual environment (its venv/ensurepip modules are missing);" \
	      "install your system's Python venv package (Debian/Ubuntu: $$PKG) or set PYTHON=/path/to/python3" >&2; \
	    exit 1; \
	  fi; }

# Redis (shared rate limits) and Chromium (the web page test) come from Debian's packages.
system-deps:
	@command -v redis-server >/dev/null && command -v chromium >/dev/null || { \
	  echo "Installing redis-server and chromium (Debian packages)..."; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q redis-server chromium; }

# ImageNet weights where they can be downloaded; otherwise untrained weights, with a loud warning.
$(KERAS_MODEL):
	$(PY) scripts/download_inceptionv3_model.py --weights imagenet || \
	  $(PY) scripts/download_inceptionv3_model.py --weights none

# Export a version when there is none, or when the latest predates a signature the gateway calls.
model: venv $(KERAS_MODEL)
	$(PY) scripts/export_saved_model.py --model $(KERAS_MODEL) --base-path $(MODEL_BASE_PATH) --if-needed

# One of MODELS by its Keras name: ImageNet weights where they can be downloaded, otherwise
# untrained weights with a loud warning; then its first export (or a newer one, as for `model`).
.PRECIOUS: $(MODEL_REPOSITORY)/%.keras  # a downloaded model is kept, not an intermediate file
$(MODEL_REPOSITORY)/%.keras: | venv
	$(PY) scripts/download_model.py --model $* --weights imagenet --output $@ || \
	  $(PY) scripts/download_model.py --model $* --weights none --output $@

model-%: venv $(MODEL_REPOSITORY)/%.keras
	$(PY) scripts/export_saved_model.py --model $(MODEL_REPOSITORY)/$*.keras --base-path $(MODEL_REPOSITORY)/$* --if-needed

# Export the next version (the running model server picks it up).
export: venv $(KERAS_MODEL)
	$(PY) scripts/export_saved_model.py --model $(KERAS_MODEL) --base-path $(MODEL_BASE_PATH)

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
