"""Does a generator's augmentation help a model ignore the background? Measured on a shift task.

    python benchmarks/augmentation_value.py            # both tasks, both budgets (long: resumable)
    python benchmarks/augmentation_value.py --quick    # seconds: a smoke test of every code path
    python benchmarks/augmentation_value.py --sd-model PATH   # adds Stable Diffusion when present

Each (task, budget, seed, condition) result is saved as it is made under ``--results``
(default ``benchmarks/results/augmentation_value/<settings>/``); a rerun reads what is there and
trains only what is missing, so a killed run resumes (``--fresh`` starts over).

The tasks (built here, offline, from fixed seeds):

- **objects**: five shape classes (disc, triangle, cross, ring, star) with random size, rotation,
  position, colour over the full gamut and inner grain, so the class never depends on colour;
  each comes with its exact mask;
- **training backgrounds**: five procedural families (pink smooth gradient, blue fine noise,
  green blotches, brown stripes, dark grey speckle); class *c* sits on family *c* with
  probability ``--correlation`` (0.9), so the background alone nearly predicts the class;
- **test sets**: in-distribution (the same correlation), OOD *swapped* (every object on another
  class's family), OOD *novel* (five families never seen in training: checks, rings, plaid,
  hatching, dots, in colours over the full gamut) and *mixed-rand* (the in-distribution test
  objects, each on another test image's background, as in the ImageNet-9 backgrounds challenge,
  Xiao et al. 2020). The **background gap** is in-distribution minus mixed-rand accuracy.
- **shift** task: the above. **habitat** task (Gao et al. 2023): the background is partly signal:
  class *c* on family *c* 70 % of the time in training *and* test, and the objects are smaller
  and grainier, so their shape alone is not always enough: here the in-distribution column is
  the one that counts, and it shows what a generator costs where the habitat helps.

Conditions, each the originals plus ``--variants`` composites per image made with the library's
own code (``GENERATORS.create(...)`` and ``backdrop.composite.composite`` with the true masks and
the default ``CompositeConfig``, or ``--feather N``): ``originals`` (none added), ``texture``,
``random``, ``pool`` (a folder of 200 unrelated photo-like pictures, written to a temporary folder:
out-of-focus blotches, horizons, clutter of boxes and ellipses, close-up surfaces), ``swap``
(another training image's clean background, of another class first: the library's donor store,
``donors.write_store``, with the true masks), ``swap+random`` (each variant one of the two, by
seed), ``oracle`` (new backgrounds from the training families, drawn independently of the class),
and ``sd-txt2img`` when ``--sd-model`` names a model that loads here (skipped otherwise).

Every condition trains the same small CNN (CPU, torch; four conv layers of 24-96 channels) with
the same batch size and seeds, at each **budget** (``--steps``, default 600 and 2000: a short one
where hard composites are not yet fitted, and a long one). The table gives, per task and budget,
accuracy per test set (mean over seeds, ± the spread), the background gap, the accuracy on the
condition's own training data at the end (how far the budget fitted it) and the share of the
originals-to-oracle gap each condition closes on the swapped set.
"""

from __future__ import annotations

import argparse
import colorsys
import hashlib
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from backdrop.composite import composite
from backdrop.config import CompositeConfig, GenerateConfig
from backdrop.generate import GENERATORS
from backdrop.types import GenerateRequest, Prompt

CLASSES = ("disc", "triangle", "cross", "ring", "star")
K = len(CLASSES)
CONDITIONS = ("originals", "texture", "random", "pool", "swap", "swap+random", "oracle", "sd-txt2img")
TASKS = ("shift", "habitat")
HABITAT_CORRELATION = 0.7  # habitat task: P(class c on family c), in training and in test
HABITAT_SCALE = 0.6  # habitat task: objects this much smaller than in the shift task
HABITAT_GRAIN = 28.0  # ... and grainier (object pixel noise, grey levels)
SETS = ("in-dist", "OOD swapped", "OOD novel", "mixed-rand")
RESULTS = Path(__file__).resolve().parent / "results" / "augmentation_value"


@dataclass(frozen=True)
class Size:
    side: int  # image side, px
    train: int  # original training images
    test: int  # images per test set
    budgets: tuple[int, ...]  # SGD steps per training run, one run per budget (the same for every condition)
    batch: int
    seeds: tuple[int, ...]
    pool: int  # backgrounds in the pool folder
    width: int = 24  # the CNN's first layer's channels (then 2x, 4x, 4x)


DEFAULT = Size(side=32, train=1200, test=500, budgets=(600, 2000), batch=32, seeds=(0, 1, 2), pool=200)
QUICK = Size(side=32, train=60, test=30, budgets=(4, 6), batch=16, seeds=(0,), pool=6, width=8)


# -- colours and objects -----------------------------------------------------------------------


def hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1))) * 255.0


def shape_mask(cls: int, side: int, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """A binary (0/255) mask of one object of class ``cls``: random size, rotation and position."""
    m = np.zeros((side, side), np.uint8)
    r = side * rng.uniform(0.2, 0.32) * scale
    cx = side / 2 + rng.uniform(-0.12, 0.12) * side
    cy = side / 2 + rng.uniform(-0.12, 0.12) * side
    a0 = rng.uniform(0, 2 * np.pi)

    def poly(radii, n):
        ang = a0 + np.arange(n) * 2 * np.pi / n
        pts = np.stack([cx + radii * np.cos(ang), cy + radii * np.sin(ang)], 1)
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 255)

    if cls == 0:  # disc (slightly elliptical)
        cv2.ellipse(m, (round(cx), round(cy)), (round(r), round(r * rng.uniform(0.75, 1.0))),
                    np.degrees(a0), 0, 360, 255, -1)
    elif cls == 1:  # triangle
        poly(np.full(3, r * 1.1), 3)
    elif cls == 2:  # cross: two bars
        for k in range(2):
            ang = a0 + k * np.pi / 2
            dx, dy = np.cos(ang), np.sin(ang)
            w = r * 0.32
            pts = np.array([[cx - dx * r - dy * w, cy - dy * r + dx * w], [cx + dx * r - dy * w, cy + dy * r + dx * w],
                            [cx + dx * r + dy * w, cy + dy * r - dx * w], [cx - dx * r + dy * w, cy - dy * r - dx * w]])
            cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 255)
    elif cls == 3:  # ring: its hole shows the background
        cv2.circle(m, (round(cx), round(cy)), round(r), 255, -1)
        cv2.circle(m, (round(cx), round(cy)), round(r * rng.uniform(0.45, 0.6)), 0, -1)
    else:  # five-pointed star
        radii = np.where(np.arange(10) % 2 == 0, r * 1.1, r * 0.45)
        poly(radii, 10)
    return m


def object_pixels(side: int, rng: np.random.Generator, grain_sd: float = 12.0) -> np.ndarray:
    """The object's look: a colour over the whole gamut, a shading gradient, inner grain."""
    base = hsv(rng.random(), rng.uniform(0.2, 1.0), rng.uniform(0.25, 1.0))
    y, x = np.mgrid[0:side, 0:side] / side
    ang = rng.uniform(0, 2 * np.pi)
    shade = 1 + 0.25 * ((x - 0.5) * np.cos(ang) + (y - 0.5) * np.sin(ang))
    grain = rng.normal(0, grain_sd, (side, side, 1))
    return base * shade[..., None] + grain


# -- backgrounds -------------------------------------------------------------------------------


def _noise(rng, side, cells):
    return cv2.resize(rng.random((cells, cells)).astype(np.float32), (side, side), interpolation=cv2.INTER_CUBIC)


def _two_tone(t: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0, 1)[..., None]
    return c0 * (1 - t) + c1 * t


def train_family(fam: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """Training background of family ``fam`` (each has its own hue and texture)."""
    y, x = np.mgrid[0:side, 0:side] / side
    j = lambda: rng.uniform(-0.03, 0.03)  # noqa: E731  (small within-family hue jitter)
    if fam == 0:  # pink smooth gradient (H&E-like)
        ang = rng.uniform(0, 2 * np.pi)
        t = 0.5 + 0.6 * ((x - 0.5) * np.cos(ang) + (y - 0.5) * np.sin(ang))
        img = _two_tone(t, hsv(0.92 + j(), 0.25, 0.95), hsv(0.9 + j(), 0.5, 0.8))
    elif fam == 1:  # blue fine noise
        t = cv2.GaussianBlur(rng.random((side, side)).astype(np.float32), (0, 0), 0.8) * 2 - 0.5
        img = _two_tone(t, hsv(0.6 + j(), 0.8, 0.35), hsv(0.58 + j(), 0.6, 0.75))
    elif fam == 2:  # green blotches
        t = (_noise(rng, side, 4) + 0.5 * _noise(rng, side, 8)) / 1.5
        img = _two_tone(t * 1.6 - 0.3, hsv(0.3 + j(), 0.7, 0.3), hsv(0.27 + j(), 0.5, 0.8))
    elif fam == 3:  # brown stripes
        ang = rng.uniform(0, np.pi)
        f = rng.uniform(3, 6)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * f * (x * np.cos(ang) + y * np.sin(ang)))
        img = _two_tone(t, hsv(0.08 + j(), 0.7, 0.35), hsv(0.1 + j(), 0.5, 0.7))
    else:  # dark grey with bright speckles
        img = np.full((side, side, 3), rng.uniform(35, 60))
        n = int(side * side / 40)
        img[rng.integers(0, side, n), rng.integers(0, side, n)] = rng.uniform(150, 230)
        img = cv2.GaussianBlur(img, (0, 0), 0.5)
    return img + rng.normal(0, 4, img.shape)


def novel_family(fam: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """Test-only backgrounds: textures never seen in training, colours over the full gamut."""
    y, x = np.mgrid[0:side, 0:side] / side
    c0 = hsv(rng.random(), rng.uniform(0.2, 1), rng.uniform(0.2, 1))
    c1 = hsv(rng.random(), rng.uniform(0.2, 1), rng.uniform(0.2, 1))
    if fam == 0:  # checks
        n = rng.uniform(3, 8)
        t = ((np.floor(x * n) + np.floor(y * n)) % 2).astype(np.float32)
    elif fam == 1:  # concentric rings
        cx, cy = rng.uniform(0, 1, 2)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 7) * np.hypot(x - cx, y - cy))
    elif fam == 2:  # plaid
        f1, f2 = rng.uniform(2, 6, 2)
        t = 0.5 * (np.sin(2 * np.pi * f1 * x) > 0.3) + 0.5 * (np.sin(2 * np.pi * f2 * y) > 0.3)
    elif fam == 3:  # fine diagonal hatching
        t = (np.sin(2 * np.pi * rng.uniform(8, 14) * (x + y * rng.choice([-1, 1]))) > 0).astype(np.float32)
    else:  # a grid of dots
        n = rng.uniform(4, 9)
        t = (np.hypot((x * n) % 1 - 0.5, (y * n) % 1 - 0.5) < 0.25).astype(np.float32)
    return _two_tone(t, c0, c1) + rng.normal(0, 4, (side, side, 3))


def pool_picture(rng: np.random.Generator, side: int) -> np.ndarray:
    """One 'unrelated photo' for the pool: a scene of one of four kinds, as a photo folder holds them.

    Soft colour blotches (out-of-focus scenes), a horizon (a sky gradient over a textured ground),
    clutter (overlapping blurred boxes and ellipses: furniture, shelves) and a close-up surface (an
    anisotropic grain: wood, fabric, stone). Colours over the whole gamut, then blur and sensor grain.
    """
    kind = int(rng.integers(4))
    colours = [hsv(rng.random(), rng.uniform(0, 1), rng.uniform(0.1, 1)) for _ in range(4)]
    y, x = np.mgrid[0:side, 0:side] / side
    if kind == 0:  # blotches
        img = np.zeros((side, side, 3))
        weights = np.stack([_noise(rng, side, int(rng.integers(2, 6))) ** 3 for _ in colours])
        weights /= weights.sum(0, keepdims=True)
        for wgt, c in zip(weights, colours):
            img += wgt[..., None] * c
    elif kind == 1:  # horizon: sky gradient above, textured ground below
        h0 = rng.uniform(0.3, 0.7) + 0.1 * (_noise(rng, side, 3) - 0.5)
        sky = _two_tone(y / max(h0.max(), 1e-3), colours[0], colours[1])
        ground = _two_tone(_noise(rng, side, int(rng.integers(6, 16))), colours[2], colours[3])
        img = np.where((y < h0)[..., None], sky, ground)
    elif kind == 2:  # clutter: boxes and ellipses over a wall colour
        img = np.zeros((side, side, 3)) + colours[0]
        for _ in range(int(rng.integers(3, 9))):
            c = hsv(rng.random(), rng.uniform(0, 1), rng.uniform(0.1, 1))
            p0 = rng.integers(-side // 4, side, 2)
            p1 = p0 + rng.integers(side // 8, side // 2, 2)
            if rng.random() < 0.6:
                cv2.rectangle(img, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), c.tolist(), -1)
            else:
                cv2.ellipse(img, (int(p0[0]), int(p0[1])), (int(p1[0] - p0[0]), int(p1[1] - p0[1])),
                            float(rng.uniform(0, 180)), 0, 360, c.tolist(), -1)
    else:  # a close-up surface: grain stretched along one direction
        t = rng.random((side, side)).astype(np.float32)
        k = int(rng.integers(3, 9)) * 2 + 1
        kern = np.zeros((k, k), np.float32)
        kern[k // 2] = 1.0 / k
        rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
        t = cv2.filter2D(t, -1, cv2.warpAffine(kern, rot, (k, k)))
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        img = _two_tone(0.7 * t + 0.3 * _noise(rng, side, 4), colours[0], colours[1])
    img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.3, 1.5)))
    return img + rng.normal(0, 5, img.shape)


def u8(a: np.ndarray) -> np.ndarray:
    return np.clip(a + 0.5, 0, 255).astype(np.uint8)


# -- data sets ---------------------------------------------------------------------------------


@dataclass
class Sample:
    image: np.ndarray  # uint8 (side, side, 3)
    mask: np.ndarray  # uint8 0/255
    background: np.ndarray  # the clean background it was made on
    label: int


def make_sample(cls: int, side: int, rng: np.random.Generator, background: np.ndarray, scale: float = 1.0,
                grain: float = 12.0) -> Sample:
    mask = shape_mask(cls, side, rng, scale)
    obj = object_pixels(side, rng, grain)
    fg = mask == 255
    img = background.copy()
    img[fg] = obj[fg]
    bg = u8(background)
    return Sample(u8(img), mask, bg, cls)


def build_sets(size: Size, seed: int, correlation: float, task: str = "shift"):
    rng = np.random.default_rng(seed * 1000 + 1 + (500 if task == "habitat" else 0))
    side = size.side
    look = {"scale": HABITAT_SCALE, "grain": HABITAT_GRAIN} if task == "habitat" else {}

    def correlated(n):
        out = []
        for i in range(n):
            cls = i % K
            fam = cls if rng.random() < correlation else int(rng.integers(K))
            out.append(make_sample(cls, side, rng, train_family(fam, side, rng), **look))
        return out

    train = correlated(size.train)
    test_id = correlated(size.test)
    swapped = [make_sample(i % K, side, rng, train_family((i % K + int(rng.integers(1, K))) % K, side, rng), **look)
               for i in range(size.test)]
    novel = [make_sample(i % K, side, rng, novel_family(int(rng.integers(K)), side, rng), **look)
             for i in range(size.test)]
    # mixed-rand: the in-distribution test objects, each on another test image's clean background
    n = len(test_id)
    mixed = []
    for i, s in enumerate(test_id):
        other = test_id[(i + 1 + int(rng.integers(n - 1))) % n] if n > 1 else s
        fg = s.mask == 255
        img = other.background.copy()
        img[fg] = s.image[fg]
        mixed.append(Sample(img, s.mask, other.background, s.label))
    return train, {"in-dist": test_id, "OOD swapped": swapped, "OOD novel": novel, "mixed-rand": mixed}


def augment(train: list[Sample], condition: str, variants: int, seed: int, pool_dir: Path, sd_model: str | None,
            feather: int | None = None):
    """The extra composites for ``condition``, made with the library's generators and composite."""
    if condition == "originals":
        return []
    # the default feather (and its halo fix) is what users get, unless --feather says otherwise
    cfg = CompositeConfig() if feather is None else CompositeConfig(feather=feather)
    rng = np.random.default_rng(seed * 1000 + 7)
    gen = None
    kernel = np.ones((5, 5), np.uint8)
    if condition == "pool":
        gen = GENERATORS.create("pool", GenerateConfig(backend="pool", backgrounds=str(pool_dir)))
    elif condition == "sd-txt2img":
        gen = GENERATORS.create("sd-txt2img", GenerateConfig(backend="sd-txt2img", model=sd_model, steps=20))
    elif condition != "oracle":
        gen = GENERATORS.create(condition, GenerateConfig(backend=condition))
    if getattr(gen, "needs_set", False):  # swap: the training set's clean backgrounds, as the engine's first pass makes them
        from backdrop.generate import donors

        store = donors.write_store(pool_dir / f"donors-{condition}-{seed}", (
            (f"{i:05d}", s.label, s.image, cv2.dilate(s.mask, kernel) > 0) for i, s in enumerate(train)))
        gen.bind_set(store, variants=variants, base_seed=seed)
    out = []
    for i, s in enumerate(train):
        image, mask = Image.fromarray(s.image), Image.fromarray(s.mask)
        known = Image.fromarray(np.where(cv2.dilate(s.mask, kernel) == 0, 255, 0).astype(np.uint8))
        for k in range(variants):
            if gen is None:  # oracle: a fresh training-family background, whatever the class
                bg = Image.fromarray(u8(train_family(int(rng.integers(K)), s.image.shape[0], rng)))
            else:
                request = GenerateRequest(image, mask, Image.fromarray(s.background), known,
                                          Prompt("a background, empty scene"), seed=seed * 100000 + i * variants + k,
                                          slot=i * variants + k, item=f"{i:05d}")
                bg = gen(request)
            comp = composite(image, mask, bg, cfg)
            out.append(Sample(np.asarray(comp), s.mask, np.asarray(bg), s.label))
    return out


# -- model -------------------------------------------------------------------------------------


def train_and_test(train: list[Sample], tests: dict, size: Size, seed: int, steps: int) -> dict[str, float]:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.stack([s.image for s in train])).permute(0, 3, 1, 2).float().div(255)
    y = torch.tensor([s.label for s in train])
    # small enough for 15 training runs on a shared 2-core machine; big enough to learn the shapes
    w = size.width
    net = nn.Sequential(
        nn.Conv2d(3, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, K),
    )
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    lossf = nn.CrossEntropyLoss()
    net.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (size.batch,), generator=gen)
        xb = x[idx]
        flip = torch.rand(size.batch, generator=gen) < 0.5  # flips: shapes keep their class
        xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
        loss = lossf(net(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    acc = {}
    with torch.no_grad():
        for name, samples in tests.items():
            xt = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float().div(255)
            yt = torch.tensor([s.label for s in samples])
            pred = torch.cat([net(xt[i:i + 256]).argmax(1) for i in range(0, len(xt), 256)])
            acc[name] = float((pred == yt).float().mean())
        # how far the budget fitted this condition's own training data (originals and composites)
        pick = torch.randperm(len(x), generator=gen)[:2000]
        pred = torch.cat([net(x[pick[i:i + 256]]).argmax(1) for i in range(0, len(pick), 256)])
        acc["train"] = float((pred == y[pick]).float().mean())
    return acc


# -- main --------------------------------------------------------------------------------------


def sd_usable(sd_model: str | None) -> str | None:
    """None when Stable Diffusion can run here, else why it is skipped."""
    if not sd_model:
        return "no --sd-model given"
    avail = GENERATORS.availability("sd-txt2img", GenerateConfig(backend="sd-txt2img", model=sd_model))
    return None if avail.usable else avail.reason


def settings_key(size: Size, correlation: float, variants: int, feather: int | None, task: str) -> str:
    """What a saved result depends on (budget, seed and condition are in its file name)."""
    data = {k: v for k, v in size.__dict__.items() if k not in ("budgets", "seeds")}
    data.update(correlation=HABITAT_CORRELATION if task == "habitat" else correlation, variants=variants,
                feather=feather, task=task, habitat=(HABITAT_SCALE, HABITAT_GRAIN) if task == "habitat" else None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]


def run(size: Size, correlation: float, variants: int, sd_model: str | None, threads: int, out=sys.stdout,
        only: list[str] | None = None, feather: int | None = None, tasks: tuple[str, ...] = ("shift",),
        results_dir: Path | None = None, report_only: bool = False) -> dict:
    """Train and test every (task, budget, seed, condition) not saved yet; print the tables.
    Returns {task: {budget: {condition: [accuracies per seed]}}}."""
    import torch

    torch.set_num_threads(threads)
    logging.getLogger("backdrop").setLevel(logging.ERROR)  # texture warns about small patches at 48 px
    skip_sd = sd_usable(sd_model)
    conditions = [c for c in CONDITIONS if not (c == "sd-txt2img" and skip_sd)]
    if only:
        conditions = [c for c in conditions if c in only or c in ("originals", "oracle")]
    results: dict = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="backdrop-pool-") as tmp:
        pool_dir = Path(tmp)
        prng = np.random.default_rng(12345)
        for i in range(size.pool):
            Image.fromarray(u8(pool_picture(prng, 2 * size.side))).save(pool_dir / f"bg_{i:03d}.png")
        for task in tasks:
            corr = HABITAT_CORRELATION if task == "habitat" else correlation
            folder = (results_dir or RESULTS) / settings_key(size, correlation, variants, feather, task) if \
                results_dir is not False else None
            results[task] = {b: {c: [] for c in conditions} for b in size.budgets}
            for seed in size.seeds:
                sets = None
                for cond in conditions:
                    saved = {b: _load(folder, b, seed, cond) for b in size.budgets}
                    todo = [] if report_only else [b for b in size.budgets if saved[b] is None]
                    extra = t1 = None
                    if todo:
                        if sets is None:
                            sets = build_sets(size, seed, corr, task)
                        train, tests = sets
                        t0 = time.perf_counter()
                        extra = augment(train, cond, variants, seed, pool_dir, sd_model, feather)
                        t1 = time.perf_counter()
                    for b in size.budgets:
                        acc = saved[b]
                        if acc is None and report_only:
                            continue  # --report: what is saved, nothing trained
                        if acc is None:
                            t2 = time.perf_counter()
                            acc = train_and_test(train + extra, tests, size, seed, b)
                            _save(folder, b, seed, cond, acc)
                            print(f"{task} {b} steps seed {seed} {cond:<11} " + " ".join(f"{k} {v:.3f}" for k, v in acc.items())
                                  + f"  (augment {t1 - t0:.1f}s, train {time.perf_counter() - t2:.1f}s)", file=out, flush=True)
                        results[task][b][cond].append(acc)
                    del extra
    total = time.perf_counter() - started
    for task in tasks:
        for b in size.budgets:
            print_table(results[task][b], size, HABITAT_CORRELATION if task == "habitat" else correlation, variants,
                        skip_sd, total, out, feather, task=task, steps=b)
    return results


def _result_path(folder: Path | None, budget: int, seed: int, cond: str) -> Path | None:
    return None if folder is None else folder / f"{budget}-steps_seed{seed}_{cond.replace('+', '-plus-')}.json"


def _load(folder, budget, seed, cond):
    path = _result_path(folder, budget, seed, cond)
    try:
        return json.loads(path.read_text()) if path is not None else None
    except (OSError, ValueError):
        return None


def _save(folder, budget, seed, cond, acc) -> None:
    path = _result_path(folder, budget, seed, cond)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(acc))
    tmp.replace(path)  # whole or absent: a killed run never leaves half a result


def print_table(results, size, correlation, variants, skip_sd, total, out, feather=None, task="shift",
                steps=None) -> None:
    sets = ["in-dist", "OOD swapped", "OOD novel"]
    keys = sets + ["mixed-rand", "train"]
    mean = {c: {s: float(np.mean([r[s] for r in rs])) for s in keys} for c, rs in results.items() if rs}
    spread = {c: {s: float(np.std([r[s] for r in rs])) for s in keys} for c, rs in results.items() if rs}
    seeds_of = {c: len(rs) for c, rs in results.items() if rs}
    if "originals" not in mean:
        print(f"\ntask {task}, {steps} steps: nothing saved yet", file=out)
        return
    base, oracle = mean["originals"], mean.get("oracle", mean["originals"])
    print(file=out)
    print(f"task {task}, {steps} steps — settings: {size.side}x{size.side} px, {size.train} training images "
          f"(+{variants} variants each), {size.test} per test set, CNN width {size.width}, {steps} steps of batch "
          f"{size.batch}, seeds {list(size.seeds)}, class-background correlation {correlation}"
          + (f" (train and test; objects x{HABITAT_SCALE} smaller, grain {HABITAT_GRAIN:g})" if task == "habitat" else "")
          + f", {size.pool} pool pictures, feather {CompositeConfig().feather if feather is None else feather} px; "
          f"{total / 60:.1f} min this run", file=out)
    print(file=out)
    print("| training data | in-distribution | OOD (swapped) | OOD (novel) | background gap "
          "| training accuracy | swapped gap closed |", file=out)
    print("|---|---|---|---|---|---|---|", file=out)
    for cond in CONDITIONS:
        if cond not in mean:
            why = skip_sd if cond == "sd-txt2img" and skip_sd else "not asked for"
            print(f"| {cond} | skipped: {why} | | | | | |", file=out)
            continue
        cells = [f"{100 * mean[cond][s]:.1f} ± {100 * spread[cond][s]:.1f} %" for s in sets]
        bg_gap = 100 * (mean[cond]["in-dist"] - mean[cond]["mixed-rand"])
        gap = oracle["OOD swapped"] - base["OOD swapped"]
        closed = f"{100 * (mean[cond]['OOD swapped'] - base['OOD swapped']) / gap:+.0f} %" if abs(gap) > 1e-9 else "n/a"
        label = cond if cond in ("originals", "oracle") else f"+ {variants} `{cond}` variants each"
        if seeds_of[cond] != len(size.seeds):  # --report on a run still going: say how many seeds
            label += f" ({seeds_of[cond]} of {len(size.seeds)} seeds)"
        print(f"| {label} | " + " | ".join(cells) + f" | {bg_gap:+.1f} | {100 * mean[cond]['train']:.1f} % | {closed} |",
              file=out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run (seconds): every code path, no meaning")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the seeds")
    parser.add_argument("--steps", type=int, nargs="+", help="override the training budgets (steps; one run each)")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="shift, habitat or both")
    parser.add_argument("--correlation", type=float, default=0.9, help="shift task: P(class c on its own family)")
    parser.add_argument("--variants", type=int, default=2, help="composites added per training image")
    parser.add_argument("--sd-model", help="a Stable Diffusion model (folder or id) to add as a condition")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: on a shared machine more threads spin and run 10x slower)")
    parser.add_argument("--side", type=int, help="override the image side (px)")
    parser.add_argument("--train", type=int, help="override the number of original training images")
    parser.add_argument("--test", type=int, help="override the images per test set")
    parser.add_argument("--pool", type=int, help="override the number of pool pictures")
    parser.add_argument("--width", type=int, help="override the CNN's width (first layer's channels)")
    parser.add_argument("--feather", type=int, help="composite feather (px); default: CompositeConfig's")
    parser.add_argument("--conditions", nargs="+", choices=CONDITIONS, help="run only these (originals and oracle always)")
    parser.add_argument("--results", type=Path, help=f"where results are saved as made [default: {RESULTS}]")
    parser.add_argument("--fresh", action="store_true", help="ignore saved results (and do not save)")
    parser.add_argument("--report", action="store_true", help="print the tables from saved results; train nothing")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else DEFAULT
    if args.seeds:
        size = Size(**{**size.__dict__, "seeds": tuple(args.seeds)})
    if args.steps:
        size = Size(**{**size.__dict__, "budgets": tuple(args.steps)})
    for field in ("side", "train", "test", "width", "pool"):
        if getattr(args, field):
            size = Size(**{**size.__dict__, field: getattr(args, field)})
    results_dir = False if (args.fresh or args.quick) else args.results
    run(size, args.correlation, args.variants, args.sd_model, args.threads, only=args.conditions, feather=args.feather,
        tasks=tuple(args.tasks), results_dir=results_dir, report_only=args.report)


if __name__ == "__main__":
    main()
