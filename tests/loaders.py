"""Data set loaders written to the documented rules of the real clients, for tests that check a
written set loads as those clients load it, without importing them (Ultralytics is AGPL; the
``datasets`` library is not a dependency).

- :func:`ultralytics_load`: ``ultralytics.data.utils.check_det_dataset`` (how data.yaml's
  ``path`` and ``train``/``val``/``test`` resolve), ``YOLODataset.get_img_files`` (folders globbed
  recursively, ``.txt`` lists whose ``./`` lines are relative to the list) and
  ``img2label_paths`` (the last ``/images/`` becomes ``/labels/``, the suffix ``.txt``).
- :func:`hf_imagefolder`: ``datasets``' ``imagefolder`` builder with ``data_dir``: which files
  it takes (``data_files.resolve_pattern``: hidden files and folders and ``__`` folders left
  out), which split each lands in (``data_files``' split patterns: folder names, then file
  names, else all ``train``), and the rows (``folder_based_builder``: a metadata file's rows
  with ``file_name`` joined to its folder; without one, one row per image, with a ``label``
  from the parent folder when there are several and all images are at the same depth).
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re
from pathlib import Path

import yaml

# -- Ultralytics ----------------------------------------------------------------------------------------------------

ULTRA_IMG_FORMATS = {"bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm", "heic"}


def ultralytics_load(yaml_file: Path, *, cwd: Path, datasets_dir: Path) -> dict[str, list[tuple[Path, Path]]]:
    """{split: [(image, its label file)]} as Ultralytics resolves ``yaml_file`` run from ``cwd``.

    ``path``: the yaml's folder when absent or empty; a relative one is taken from the working
    directory if it exists there, else from the datasets folder. ``train: ../x`` that does not
    exist is tried as ``x``. Raises FileNotFoundError where Ultralytics does (val missing, a
    listed folder or list missing, no images).
    """
    yaml_file = Path(yaml_file)
    data = yaml.safe_load(yaml_file.read_text(encoding="utf-8"))
    for key in ("train", "val"):
        if key not in data:
            raise SyntaxError(f"{yaml_file}: '{key}:' key missing")
    path = Path(data.get("path") or yaml_file.parent)
    if not path.is_absolute():
        path = cwd / path if (cwd / path).exists() else datasets_dir / path
    out = {}
    for key in ("train", "val", "test"):
        value = data.get(key)
        if not value:
            continue
        if isinstance(value, str):
            x = (path / value).resolve()
            if not x.exists() and value.startswith("../"):
                x = (path / value[3:]).resolve()
            sources = [x]
        else:
            sources = [(path / v).resolve() for v in value]
        if key == "val" and not all(s.exists() for s in sources):
            raise FileNotFoundError(f"images not found, missing path '{next(s for s in sources if not s.exists())}'")
        out[key] = [(Path(f), _label_file(f)) for f in _img_files(sources, cwd)]
    return out


def _img_files(sources: list[Path], cwd: Path) -> list[str]:
    found = []
    for p in sources:
        if p.is_dir():
            found += glob.glob(str(p / "**" / "*.*"), recursive=True)
        elif p.is_file():
            parent = str(p.parent) + os.sep
            for line in p.read_text(encoding="utf-8").strip().splitlines():
                line = line.replace("./", parent) if line.startswith("./") else line
                found.append(line if os.path.isabs(line) else str(cwd / line))  # relative: to the working directory
        else:
            raise FileNotFoundError(f"{p} does not exist")
    files = sorted(f for f in found if f.rpartition(".")[-1].lower() in ULTRA_IMG_FORMATS)
    if not files:
        raise FileNotFoundError(f"no images found in {sources}")
    return files


def _label_file(image: str) -> Path:
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return Path(sb.join(image.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt")


# -- Hugging Face imagefolder -----------------------------------------------------------------------------------------

HF_IMAGE_EXTENSIONS = {".blp", ".bmp", ".dib", ".bufr", ".cur", ".pcx", ".dcx", ".dds", ".ps", ".eps", ".fit",
                       ".fits", ".fli", ".flc", ".ftc", ".ftu", ".gbr", ".gif", ".grib", ".h5", ".hdf", ".png",
                       ".apng", ".jp2", ".j2k", ".jpc", ".jpf", ".jpx", ".j2c", ".icns", ".ico", ".im", ".iim",
                       ".tif", ".tiff", ".jfif", ".jpe", ".jpg", ".jpeg", ".mpg", ".mpeg", ".msp", ".pcd", ".pxr",
                       ".pbm", ".pgm", ".ppm", ".pnm", ".psd", ".bw", ".rgb", ".rgba", ".sgi", ".ras", ".tga",
                       ".icb", ".vda", ".vst", ".webp", ".wmf", ".emf", ".xbm", ".xpm", ".avif"}
HF_METADATA = ("metadata.csv", "metadata.jsonl", "metadata.parquet")
HF_FILES_TO_IGNORE = {"README.md", "config.json", "dataset_info.json", "dataset_infos.json", "dummy_data.zip",
                      "dataset_dict.json"}
HF_SPLIT_KEYWORDS = {"train": ["train", "training"], "validation": ["validation", "valid", "dev", "val"],
                     "test": ["test", "testing", "eval", "evaluation"]}
_SEP = "-._ 0-9"
_IN_DIR_NAME = ["**/{kw}/**", "**/{kw}[{sep}]*/**", "**/*[{sep}]{kw}/**", "**/*[{sep}]{kw}[{sep}]*/**"]
_IN_FILE_NAME = ["**/{kw}[{sep}]*", "**/*[{sep}]{kw}[{sep}]*"]


def hf_files(data_dir: Path) -> list[str]:
    """Every file the builder can see under ``data_dir`` (POSIX paths relative to it)."""
    out = []
    for folder, _, names in os.walk(data_dir):
        for name in names:
            rel = Path(os.path.relpath(Path(folder) / name, data_dir)).as_posix()
            parts = rel.split("/")
            if any(p.startswith(".") and set(p) != {"."} for p in parts):
                continue  # a hidden file, or inside a hidden folder
            if any(p.startswith("__") for p in parts[:-1]) or name in HF_FILES_TO_IGNORE:
                continue
            out.append(rel)
    return sorted(out)


def hf_imagefolder(data_dir: Path) -> dict[str, list[dict]]:
    """``load_dataset("imagefolder", data_dir=data_dir)`` as {split: rows}; a row's ``image`` is
    the absolute path of its image file (undecoded)."""
    data_dir = Path(data_dir)
    files = hf_files(data_dir)
    splits = _hf_splits(files)
    metadata = {s: [f for f in fs if Path(f).name in HF_METADATA] for s, fs in splits.items()}
    with_metadata = any(metadata.values())
    images = {s: [f for f in fs if _is_hf_image(f)] for s, fs in splits.items()}
    labels = {Path(f).parent.name for fs in images.values() for f in fs}
    depths = {f.count("/") for fs in images.values() for f in fs}
    add_labels = not with_metadata and len(labels) > 1 and len(depths) == 1
    out: dict[str, list[dict]] = {}
    for split in splits:
        rows = []
        if with_metadata:
            for m in metadata[split]:
                for row in _metadata_rows(data_dir / m):
                    name = os.path.normpath(row.pop("file_name"))
                    rows.append({"image": os.path.join(data_dir / Path(m).parent, name), **row})
        else:
            for f in images[split]:
                row = {"image": str(data_dir / f)}
                if add_labels:
                    row["label"] = Path(f).parent.name
                rows.append(row)
        out[split] = rows
    return out


def _is_hf_image(rel: str) -> bool:
    root, ext = os.path.splitext(rel)
    return ext.lower() in HF_IMAGE_EXTENSIONS or os.path.splitext(root)[1].lower() in HF_IMAGE_EXTENSIONS


def _hf_splits(files: list[str]) -> dict[str, list[str]]:
    for patterns in (_IN_DIR_NAME, _IN_FILE_NAME):
        found = {}
        for split, keywords in HF_SPLIT_KEYWORDS.items():
            rxs = [_glob_regex(p.format(kw=kw, sep=_SEP)) for kw in keywords for p in patterns]
            hit = [f for f in files if any(rx.match(f) for rx in rxs)]
            if hit:
                found[split] = hit
        if found:
            return found
    return {"train": files}


def _glob_regex(pattern: str) -> re.Pattern:
    """A glob of the fsspec >= 2023.12 kind: ``**`` any folders (or none), ``*`` within a name."""
    parts = pattern.split("/")
    rx = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            rx += ".*" if last else "(?:[^/]+/)*"
            continue
        j = 0
        while j < len(part):
            c = part[j]
            if c == "*":
                rx += "[^/]*"
            elif c == "?":
                rx += "[^/]"
            elif c == "[":
                end = part.index("]", j + 1)
                rx += part[j:end + 1]
                j = end
            else:
                rx += re.escape(c)
            j += 1
        rx += "" if last else "/"
    return re.compile("^" + rx + "$")


def _metadata_rows(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
