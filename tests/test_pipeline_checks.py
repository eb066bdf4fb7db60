"""The pipeline acts on the background checks: a failing background is made again with a retry
seed, the record says what happened, and after the retries it is kept with a warning or dropped."""

from __future__ import annotations

import numpy as np
from PIL import Image

import make_bad_inputs as bad
from backdrop import Pipeline, PipelineConfig
from backdrop.config import ChecksConfig, preset
from backdrop.seeds import retry_seed
from backdrop.stages import Generator


class CopyingGenerator(Generator):
    """Paints a copy of the kept object into the background for the seeds it is told to (as SD
    sometimes does); a plain blue-green background of a colour drawn from the seed otherwise. Written
    to the contract (backdrop.stages.Generator)."""

    name = "copying"
    generative = False
    uses_prompt = False

    def __init__(self, bad_seeds):
        self.bad_seeds = set(bad_seeds)
        self.calls = []

    def __call__(self, request):
        self.calls.append(request.seed)
        rng = np.random.default_rng(request.seed % 2**32)
        base = np.array([rng.uniform(20, 120), rng.uniform(60, 200), rng.uniform(120, 255)])  # blues and greens
        bg = np.clip(base + rng.normal(0, 8, (request.image.size[1], request.image.size[0], 3)), 0, 255).astype(np.uint8)
        if request.seed in self.bad_seeds:
            img = np.asarray(request.image)
            m = np.asarray(request.mask) == 255
            ys, xs = np.nonzero(m)
            patch = img[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
            pm = m[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
            h, w = patch.shape[:2]
            y, x = h // 3, w // 3  # the copy up and left, clear of the image's edge and of the object
            region = bg[y:y + h, x:x + w]
            region[pm[:region.shape[0], :region.shape[1]]] = patch[:region.shape[0], :region.shape[1]][
                pm[:region.shape[0], :region.shape[1]]]
        return Image.fromarray(bg)


def _pipe(gen, **checks):
    cfg = preset("offline", PipelineConfig(variants=2, seed=5, checks=ChecksConfig(**checks)))
    return Pipeline.from_config(cfg, generator=gen)


def test_failing_background_is_made_again_with_a_retry_seed(tmp_path):
    image = bad.scene(tmp_path, "img.png")
    gen = CopyingGenerator(bad_seeds={5})  # variant 1's first try paints a copy
    result = _pipe(gen)(image)
    v1, v2 = result.variants
    assert v1.seed == retry_seed(5, 1) and v2.seed == 6
    assert gen.calls == [5, retry_seed(5, 1), 6]
    rec = result.notes[f"checks.seed{v1.seed}"]
    assert rec["passed"] and rec["tries"] == 2
    assert result.notes["checks.seed6"]["tries"] == 1
    assert not result.warnings or all("failed" not in w for w in result.warnings)


def test_still_failing_after_the_retries_is_kept_with_a_warning_or_dropped(tmp_path):
    image = bad.scene(tmp_path, "img.png")
    always = {5, 6, *(retry_seed(s, r) for s in (5, 6) for r in (1, 2))}
    kept = _pipe(CopyingGenerator(always), retries=2, on_fail="keep")(image)
    assert [v.seed for v in kept.variants] == [retry_seed(5, 2), retry_seed(6, 2)]
    rec = kept.notes[f"checks.seed{retry_seed(5, 2)}"]
    assert not rec["passed"] and rec["failed"] == ["object_copy"] and rec["tries"] == 3 and rec["kept"] is True
    assert sum("failed object_copy after 3 tries; kept" in w for w in kept.warnings) == 2
    dropped = _pipe(CopyingGenerator(always), retries=1, on_fail="drop")(image)
    assert dropped.variants == [] and sum("dropped" in w for w in dropped.warnings) == 2


def test_checks_recorded_in_the_manifest_of_a_data_set(tmp_path):
    from test_augment import invoke, make_yolo, manifest

    src = tmp_path / "src"
    make_yolo(src)
    # random: a generator every check applies to (swap, augment's default, skips too_close and near_duplicate)
    assert invoke("augment", src, "-o", tmp_path / "out", "-n", "2", "--seed", "1", "--segmenter", "classical",
                  "--generator", "random", "-q").exit_code == 0
    lines = [m for m in manifest(tmp_path / "out") if m.get("variant")]
    assert lines and all(m["checks"]["passed"] and {"object_copy", "too_close", "near_duplicate"} <= set(m["checks"]["scores"])
                         for m in lines)
