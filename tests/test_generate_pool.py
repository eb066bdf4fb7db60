"""Pool generator: seeded crops from a folder of images, folder errors, unreadable files skipped."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from backdrop import runlog
from backdrop.config import GenerateConfig
from backdrop.errors import ConfigError, GenerationError
from backdrop.generate import GENERATORS
from backdrop.generate.pool import PoolGenerator
from backdrop.types import GenerateRequest, Prompt


def _request(size=(64, 48), seed=0) -> GenerateRequest:
    img = Image.new("RGB", size, (128, 128, 128))
    mask = Image.new("L", size, 0)
    return GenerateRequest(image=img, mask=mask, background=img, known=Image.new("L", size, 255),
                           prompt=Prompt("x"), seed=seed)


def _gradient(w, h, seed):
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, w)[None, :, None]
    y = np.linspace(0, 1, h)[:, None, None]
    base = rng.uniform(0, 255, 3)
    arr = base * 0.5 + 100 * x + 60 * y + rng.normal(0, 5, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


@pytest.fixture
def pool(tmp_path):
    root = tmp_path / "pool"
    (root / "sub" / "deeper").mkdir(parents=True)
    _gradient(120, 90, 1).save(root / "a.jpg", quality=95)
    _gradient(200, 100, 2).save(root / "sub" / "b.png")
    _gradient(90, 120, 3).save(root / "sub" / "deeper" / "c.webp")
    (root / "notes.txt").write_text("not an image")
    return root


def test_registered_and_described(pool):
    assert GENERATORS.load("pool") is PoolGenerator
    gen = PoolGenerator(GenerateConfig(backend="pool", backgrounds=str(pool)))
    assert gen.generative is False
    assert gen.describe()["model"] == "pool" and gen.describe()["pool"] == str(pool)
    assert len(gen.files) == 3  # recursive; the .txt is not an image


def test_seeded_output_size_and_variety(pool):
    gen = PoolGenerator(GenerateConfig(backend="pool", backgrounds=str(pool)))
    a = gen(_request(seed=5))
    assert a.mode == "RGB" and a.size == (64, 48)
    assert gen(_request(seed=5)).tobytes() == a.tobytes()
    outputs = {gen(_request(seed=s)).tobytes() for s in range(8)}
    assert len(outputs) == 8


def test_picks_files_by_seed_and_records_which(pool):
    gen = PoolGenerator(GenerateConfig(backend="pool", backgrounds=str(pool), variation=0.0))
    used = set()
    for s in range(12):
        with runlog.collecting() as rec:
            gen(_request(seed=s))
        used.add(rec["notes"][f"pool.file.seed{s}"])
    assert used == {"a.jpg", "sub/b.png", "sub/deeper/c.webp"}


def test_exif_orientation_is_applied(tmp_path):
    # stored 80x40 with the top half red and the bottom half blue; EXIF 6 shows it rotated,
    # upright it is 40x80 with a left/right split, so every output row holds both colours
    stored = np.zeros((40, 80, 3), np.uint8)
    stored[:20] = (255, 0, 0)
    stored[20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "p").mkdir()
    Image.fromarray(stored).save(tmp_path / "p" / "r.jpg", exif=exif.tobytes(), quality=95)
    gen = PoolGenerator(GenerateConfig(backend="pool", backgrounds=str(tmp_path / "p"), variation=0.0))
    out = np.asarray(gen(_request(size=(40, 80), seed=1))).astype(int)
    row = out[40]
    assert (row[:, 0] > 200).any() and (row[:, 2] > 200).any()


def test_variation_zero_keeps_colours_and_jitter_changes_them(tmp_path):
    (tmp_path / "p").mkdir()
    Image.new("RGB", (50, 50), (100, 150, 200)).save(tmp_path / "p" / "flat.png")
    plain = PoolGenerator(GenerateConfig(backend="pool", backgrounds=str(tmp_path / "p"), variation=0.0))
    assert (np.asarray(plain(_request(seed=3))) == (100, 150, 200)).all()
    varied = PoolGenerator(GenerateConfig(backend="pool", backgrounds=str(tmp_path / "p"), variation=0.5))
    out = np.asarray(varied(_request(seed=3)))
    assert not (out == (100, 150, 200)).all()
    assert np.array_equal(out, np.asarray(varied(_request(seed=3))))


def test_no_folder_given_is_a_config_error():
    assert "--backgrounds DIR" in PoolGenerator.availability(GenerateConfig(backend="pool"))
    with pytest.raises(ConfigError, match="--backgrounds DIR"):
        PoolGenerator(GenerateConfig(backend="pool"))


def test_missing_or_empty_folder_is_a_config_error(tmp_path):
    missing = str(tmp_path / "nope")
    assert PoolGenerator.availability(GenerateConfig(backend="pool", backgrounds=missing))
    with pytest.raises(ConfigError, match="--backgrounds DIR"):
        PoolGenerator(GenerateConfig(backend="pool", backgrounds=missing))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(ConfigError, match="--backgrounds DIR"):
        PoolGenerator(GenerateConfig(backend="pool", backgrounds=str(tmp_path / "empty")))


def test_availability_ok_for_a_real_folder(pool):
    assert PoolGenerator.availability(GenerateConfig(backend="pool", backgrounds=str(pool))) is None
    assert GENERATORS.availability("pool", GenerateConfig(backend="pool", backgrounds=str(pool))).usable


def test_unreadable_files_are_skipped_with_a_warning(pool):
    (pool / "broken.jpg").write_bytes(b"\xff\xd8 this is not really a jpeg")
    (pool / "zero.png").write_bytes(b"")
    (pool / "truncated.jpg").write_bytes((pool / "a.jpg").read_bytes()[:300])  # opens, fails to decode
    gen = PoolGenerator(GenerateConfig(backend="pool", backgrounds=str(pool)))
    assert len(gen.files) == 6
    with runlog.collecting() as rec:
        outs = [gen(_request(seed=s)) for s in range(40)]
    assert all(o.size == (64, 48) for o in outs)
    for name in ("broken.jpg", "zero.png", "truncated.jpg"):
        assert any(name in w for w in rec["warnings"]), name
    assert sum("broken.jpg" in w for w in rec["warnings"]) == 1  # warned once, then remembered


def test_only_unreadable_files_is_a_generation_error(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "bad.png").write_bytes(b"garbage")
    gen = PoolGenerator(GenerateConfig(backend="pool", backgrounds=str(tmp_path / "p")))
    with pytest.raises(GenerationError, match="could be read"):
        gen(_request())
