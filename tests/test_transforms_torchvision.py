"""The torchvision v2 adapter and DataLoader workers (core and adapter), each check in a fresh
process (see transforms_tv_checks.py): torchvision is installed apart from the shared
environment by scripts/setup.sh (PyPI's build for the pinned CPU torch is a CUDA one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

HERE = Path(__file__).parent
SRC = HERE.parent / "src"


def torchvision_path() -> str | None:
    """'' when torchvision imports here, the isolated folder when set-up made one, else None."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        return ""
    for base in (Path(sys.prefix), HERE.parent / ".venv"):
        if (base / "torchvision-isolated" / "torchvision").is_dir():
            return str(base / "torchvision-isolated")
    return None


def run(*args: str, need_torchvision: bool = True) -> None:
    extra = torchvision_path()
    if need_torchvision and extra is None:
        pytest.skip("torchvision is not installed (scripts/setup.sh installs it in .venv/torchvision-isolated)")
    path = [str(SRC), str(HERE)] + ([extra] if extra else []) + [os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    proc = subprocess.run([sys.executable, str(HERE / "transforms_tv_checks.py"), *args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"ok {' '.join(args)}" in proc.stdout


def test_torchvision_targets_unchanged_in_compose():
    run("targets_unchanged_in_compose")


def test_torchvision_plain_float_and_pil_images():
    run("plain_float_and_pil_images")


def test_torchvision_seeds_and_p():
    run("seeds_and_p")


def test_dataloader_two_workers_core():
    run("dataloader", "core", need_torchvision=False)


def test_dataloader_two_workers_albumentations():
    pytest.importorskip("albumentations")
    run("dataloader", "albumentations", need_torchvision=False)


def test_dataloader_two_workers_torchvision():
    run("dataloader", "torchvision")
