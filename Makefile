# KiloNeRF studio. `make view` opens the viewer on the bundled scene; `make test` runs lint, types and tests.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
TORCH_CPU_PIN := torch==2.13.0
# torch's OpenMP workers spin-wait by default, which is 5-10x slower on a shared 2-core machine.
export OMP_WAIT_POLICY ?= PASSIVE
APT_PKGS := xvfb xauth xdotool libgl1 libglx-mesa0 libgl1-mesa-dri libegl1 libegl-mesa0

.PHONY: view test lint typecheck pytest sysdeps venv native bench clean cuda

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "GPU found: installing the default (CUDA) torch build"; \
		$(VPY) -m pip install -q "torch>=2.4"; \
	else \
		echo "No GPU: installing the CPU torch pin $(TORCH_CPU_PIN)"; \
		$(VPY) -m pip install -q $(TORCH_CPU_PIN); \
	fi
	$(VPY) -m pip install -q -e ".[dev,cuda-wheels]"
	@touch $(STAMP)

# The CUDA backend's Python side: NVIDIA's NVRTC/header wheels, then pycuda built from source WITH CUDA-GL
# interop (scripts/install_pycuda.sh; a plain pip build has no pycuda.gl), then the [cuda] extra, which
# finds pycuda installed. Needs g++; links against the driver's libcuda.so.1 (a stub without a driver).
cuda: $(STAMP)
	scripts/install_pycuda.sh --python $(VPY)
	$(VPY) -m pip install -q -e ".[cuda]"
	@$(VPY) -c "from renderer.cuda import cuda_available, transfer_mode; \
		print('cuda backend:', cuda_available()); print('transfer:', transfer_mode())"

# The native CPU renderer (renderer/native/_kilocpu.so): rebuilt when its C++ sources change, skipped in a
# second when they did not. Without a C++ compiler this says why and the project runs on the torch renderer.
native: $(STAMP)
	@$(VPY) -m renderer.native.build || (command -v $${CXX:-g++} >/dev/null 2>&1 && exit 1 || true)

# System packages for OpenGL without a screen (Mesa, EGL, Xvfb). Installed only when missing and root.
sysdeps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = "0" ]; then \
			echo "Installing system packages:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		else \
			echo "Missing system packages (install them as root):$$missing"; \
		fi; \
	fi

view: $(STAMP) native
	$(VPY) run_viewer.py --scene assets/lego.kilo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP) sysdeps native
	@if command -v xvfb-run >/dev/null 2>&1; then \
		PYOPENGL_PLATFORM=egl xvfb-run -a -s "-screen 0 1280x1024x24" $(VPY) -m pytest -q $(PYTEST_ARGS); \
	else \
		PYOPENGL_PLATFORM=egl $(VPY) -m pytest -q $(PYTEST_ARGS); \
	fi

test: lint typecheck pytest

bench: $(STAMP) native
	$(VPY) benchmarks/render_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build renderer/native/_kilocpu.so
