#!/usr/bin/env bash
# Set-up on a fresh machine: a virtual environment in .venv with backdrop and every extra.
# Idempotent and quick when nothing changed (a stamp records what was installed).
# Needs only the package registries: PyPI (and Debian's apt for the browser tests, see test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${BACKDROP_EXTRAS:-all,test}

stamp=.venv/.backdrop-setup
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16) $EXTRAS"
if [ -x .venv/bin/backdrop ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check "$@"; }

# llama-cpp-python compiles llama.cpp. Its default (-march=native) build uses Intel AMX kernels
# where the CPU advertises them, and those crash (segfault on the first decode) in VMs that do
# not enable AMX. Build a portable AVX2 wheel instead, once per flag set: pip's own wheel cache
# ignores CMAKE_ARGS and would hand back a native build, so keep ours in a folder of our own.
LLAMA_VERSION=0.3.36
LLAMA_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
install_llama_cpp() {
  local dir="${BACKDROP_WHEELS:-$HOME/.cache/backdrop/wheels}/llama-cpp-python-$LLAMA_VERSION-$(echo "$LLAMA_FLAGS" | sha256sum | cut -c1-12)"
  if ! ls "$dir"/*.whl >/dev/null 2>&1; then
    echo "setup: compiling llama-cpp-python $LLAMA_VERSION (portable AVX2 build, ~10 min on 2 cores)" >&2
    CMAKE_ARGS="$LLAMA_FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
      pip wheel -q --no-deps --no-cache-dir "llama-cpp-python==$LLAMA_VERSION" -w "$dir.tmp"
    mv "$dir.tmp" "$dir"
  fi
  pip install -q --no-deps --force-reinstall "$dir"/*.whl
  pip install -q "llama-cpp-python==$LLAMA_VERSION"  # its pure-Python requirements
}
pip install -q --upgrade pip wheel
# torch first and pinned: an unpinned torch pulls a CUDA build of several GB.
# (llama-cpp-python builds from source the first time: ~10 min on 2 cores; pip caches the wheel.)
echo "setup: installing backdrop[$EXTRAS] into .venv (first time: ~15 min)" >&2
pip install -q "torch==2.13.0"
case ",$EXTRAS," in *,all,*|*,llm,*) install_llama_cpp ;; esac
pip install -q -e ".[$EXTRAS]"
# torchvision for backdrop.transforms.torchvision. PyPI's 0.28.0 (the pair of torch 2.13.0) is a
# CUDA build: with its dependencies it pulls CUDA torch and several GB of nvidia-* wheels, and even
# alone (--no-deps) its C operators cannot load on the CPU torch, which makes `import torchvision`
# fail and with it transformers' image processors. So it goes in a folder of its own, never on the
# environment's path: 7.7 MB download, 24 MB on disk. The adapter makes its pure-Python transforms
# importable; put the folder on PYTHONPATH to use it (see the README, "Inside a training loop").
TORCHVISION_VERSION=0.28.0
case ",$EXTRAS," in *,all,*|*,torchvision,*)
  if [ ! -d .venv/torchvision-isolated/torchvision-$TORCHVISION_VERSION.dist-info ]; then
    rm -rf .venv/torchvision-isolated.tmp
    pip install -q --no-deps --target .venv/torchvision-isolated.tmp "torchvision==$TORCHVISION_VERSION"
    rm -rf .venv/torchvision-isolated && mv .venv/torchvision-isolated.tmp .venv/torchvision-isolated
  fi ;;
esac
echo "$want" > "$stamp"
