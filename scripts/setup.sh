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
pip install -q --upgrade pip wheel
# torch first and pinned: an unpinned torch pulls a CUDA build of several GB.
# (llama-cpp-python builds from source the first time: ~10 min on 2 cores; pip caches the wheel.)
echo "setup: installing backdrop[$EXTRAS] into .venv (first time: ~15 min)" >&2
pip install -q "torch==2.13.0"
pip install -q -e ".[$EXTRAS]"
echo "$want" > "$stamp"
