"""The one write protocol: every byte backdrop puts on disk goes through here.

An *output set* is a folder (``backdrop run -o OUT``, ``backdrop augment -o DST``) that holds a
``.backdrop/`` record beside the outputs::

    OUT/.backdrop/set.json            marks the folder as backdrop's (kind, base seed, created)
    OUT/.backdrop/items/ab/<h>.jsonl  one journal per item (h = sha256 of the item's key)
    OUT/.backdrop/locks/ab/<h>.lock   one lock per item, held while it is written
    OUT/.backdrop/tmp/<run>/          a run's temporary files (its own lock inside)
    OUT/.backdrop/tmp.lock            held while a run's folder is made or dead runs' are removed
    OUT/manifest.jsonl                one line per written image, rebuilt from the journals

Guarantees, each one tested (tests/test_outputs.py, tests/test_faults.py):

- **No-replace writes.** A file is written to ``tmp/`` and linked into place with ``os.link``,
  which fails if the name exists: nothing that another writer (or the user) put there is ever
  replaced. A name in the way that the item's journal does not list is an error naming the path.
- **Ownership.** A journal lists every file and folder the item wrote. ``overwrite`` removes
  those and nothing else.
- **One writer per item.** An item's lock (``flock``; the kernel drops it when a process dies)
  is held while it is written; a second run waits for it, then finds the item done (same
  settings: skipped) or done by other settings (an error: its work is not reported as done).
- **Resume.** A journal line is appended after each variant's files are in place, so a kill
  loses at most the variant being written; a rerun keeps what is recorded and redoes the rest.
  Files linked before a kill but not yet recorded were announced in a ``pending`` line first,
  so they are known to be ours and are replaced.
- **No debris.** Temporary folders of runs that are gone are removed at the next start.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import BackdropError, OutputError, OutputExistsError

log = logging.getLogger(__name__)

RECORD_DIR = ".backdrop"
SET_FILE = "set.json"
MANIFEST = "manifest.jsonl"
PROTOCOL = 1


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


# Read once, at import, and nowhere else in backdrop: setting the umask to read it changes it for
# every thread of the process for that moment, so no other module may do it.
UMASK = _read_umask()
FILE_MODE = 0o666 & ~UMASK  # what an ordinary new file gets (mkstemp makes 0600)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def is_output_set(folder: str | Path) -> bool:
    """True when ``folder`` holds backdrop's record (so it is never read as input)."""
    return (Path(folder) / RECORD_DIR / SET_FILE).is_file()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def io_error(exc: OSError, path: Path | str, what: str = "cannot write") -> OutputError:
    """One line for a disk error, naming the path; ENOSPC/EROFS/EACCES in words."""
    reason = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
              errno.EACCES: "permission denied", errno.EPERM: "permission denied",
              errno.EDQUOT: "disk quota exceeded"}.get(exc.errno, exc.strerror or str(exc))
    return OutputError(f"{what} {path}: {reason}")


class OutputSet:
    """An output folder under the write protocol. Open it with :meth:`open`."""

    def __init__(self, root: Path, kind: str):
        self.root = Path(root)
        self.kind = kind
        self.record_dir = self.root / RECORD_DIR
        self.info: dict[str, Any] = {}
        self._run_tmp: Path | None = None
        self._run_lock: Any = None

    # -- opening -----------------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | Path, kind: str, *, seed: int | None = None) -> "OutputSet":
        """Create or reopen the set at ``root``: checks it is writable (before any work), marks
        it, removes debris of dead runs. ``seed``: the base seed to record when the set is new; a
        set made earlier keeps its own (``info["seed"]``), so a rerun without ``--seed`` resumes."""
        out = cls(Path(root), kind)
        out._create(seed)
        out.clean_debris()
        return out

    def _create(self, seed: int | None) -> None:
        root = self.root
        try:
            if root.exists() and not root.is_dir():
                raise OutputExistsError(f"{root} is a file, not a folder; choose another output folder")
            root.mkdir(parents=True, exist_ok=True)
            for sub in ("items", "locks", "tmp"):
                (self.record_dir / sub).mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise OutputExistsError(f"{root} (or a folder above it) is a file, not a folder; "
                                    "choose another output folder") from None
        except OSError as exc:
            raise io_error(exc, root, "cannot create output folder") from None
        try:
            self._start_run()
        except OSError as exc:
            raise io_error(exc, root, "cannot write to output folder") from None
        marker = self.record_dir / SET_FILE
        with self._lock_file(self.record_dir / "set.lock"):
            if marker.is_file():
                try:
                    self.info = json.loads(marker.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    raise OutputError(f"{marker} is unreadable ({exc}); move it away to start this set afresh") from None
                if self.info.get("kind") not in (None, self.kind):
                    raise OutputExistsError(
                        f"{root} holds a backdrop {self.info.get('kind')} output, not a {self.kind} one; "
                        "choose another output folder")
            else:
                self.info = {"protocol": PROTOCOL, "kind": self.kind, "seed": seed,
                             "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                self.write_bytes_replace(marker, (json.dumps(self.info, indent=2) + "\n").encode())
        # writable, and with room: a probe file, written, synced and removed
        probe = self._run_tmp / ".probe"
        try:
            with open(probe, "wb") as fh:
                fh.write(b"\0" * 65536)
                fh.flush()
                os.fsync(fh.fileno())
            os.unlink(probe)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(probe)
            raise io_error(exc, root, "cannot write to output folder") from None

    @property
    def seed(self) -> int | None:
        return self.info.get("seed")

    def _start_run(self) -> None:
        # made and locked under the clean-up guard: a clean-up never sees a run's folder before
        # its lock is held (it would take the folder for a dead run's and remove it)
        with self._lock_file(self.record_dir / "tmp.lock"):
            tmp = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=self.record_dir / "tmp"))
            fh = open(tmp / ".lock", "w")
            fcntl.flock(fh, fcntl.LOCK_EX)
        self._run_tmp, self._run_lock = tmp, fh

    def close(self) -> None:
        """End this run: its temporary folder goes."""
        if self._run_tmp is not None:
            shutil.rmtree(self._run_tmp, ignore_errors=True)
            self._run_lock.close()
            self._run_tmp = self._run_lock = None

    def __enter__(self) -> "OutputSet":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def clean_debris(self) -> int:
        """Remove temporary folders of runs that are no longer alive (their lock is free)."""
        removed = 0
        with self._lock_file(self.record_dir / "tmp.lock"):
            removed = self._clean_dead_runs()
        if removed:
            log.info("removed %d temporary leftover(s) of earlier interrupted runs in %s", removed, self.root)
        return removed

    def _clean_dead_runs(self) -> int:
        removed = 0
        for d in (self.record_dir / "tmp").iterdir():
            if not d.is_dir() or d == self._run_tmp:
                continue
            try:
                fh = open(d / ".lock", "a")
            except OSError:
                fh = None
            try:
                if fh is not None:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue  # a live run's
            shutil.rmtree(d, ignore_errors=True)
            removed += 1
            if fh is not None:
                fh.close()
        return removed

    # -- items -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def item(self, key: str, fingerprint: str, *, overwrite: bool = False) -> Iterator["ItemWriter"]:
        """Hold ``key``'s lock and yield its writer (waits while another run writes the item)."""
        h = key_hash(key)
        lock = self.record_dir / "locks" / h[:2] / f"{h}.lock"
        journal = self.record_dir / "items" / h[:2] / f"{h}.jsonl"
        for p in (lock, journal):
            p.parent.mkdir(parents=True, exist_ok=True)
        with self._lock_file(lock):
            writer = ItemWriter(self, key, fingerprint, journal)
            writer.open(overwrite=overwrite)
            yield writer

    @contextlib.contextmanager
    def _lock_file(self, path: Path) -> Iterator[None]:
        fh = open(path, "a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield
        finally:
            fh.close()

    def journals(self) -> Iterator[Path]:
        items = self.record_dir / "items"
        for sub in sorted(items.iterdir()) if items.is_dir() else ():
            if sub.is_dir():
                yield from sorted(sub.glob("*.jsonl"))

    # -- file writes -------------------------------------------------------------------------------
    def tmp_path(self, name: str) -> Path:
        assert self._run_tmp is not None, "output set is closed"
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=f"-{Path(name).name}", dir=self._run_tmp)
        os.close(fd)
        return Path(tmp)

    def link_new(self, data: bytes, final: Path) -> None:
        """Write ``data`` to ``final``, which must not exist (no-replace: ``os.link``)."""
        tmp = self.tmp_path(final.name)
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, FILE_MODE)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.link(tmp, final)
        except FileExistsError:
            raise OutputExistsError(f"{final} exists and was not written by this item; "
                                    "move it away or choose another output folder") from None
        except OSError as exc:
            raise io_error(exc, final) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def copy_new(self, source: Path, final: Path) -> str:
        """Copy ``source`` to ``final`` (no-replace); returns the copy's sha256."""
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise BackdropError(f"cannot read {source}: {exc.strerror}") from None
        self.link_new(data, final)
        return sha256_bytes(data)

    def write_bytes_replace(self, final: Path, data: bytes) -> None:
        """Atomically write or replace one of the set's *own* files (index files, the marker)."""
        # the temporary file lives in this run's own folder (same file system), so no other
        # run's clean-up can take it, and a kill leaves it where the next start removes it
        with self.replace_stream(final, binary=True) as fh:
            fh.write(data)

    @contextlib.contextmanager
    def replace_stream(self, final: Path, *, binary: bool = False) -> Iterator[Any]:
        """A stream that atomically becomes ``final`` when the block ends without error."""
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".bdtmp", dir=self._run_tmp or final.parent)
        try:
            with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")) as fh:
                yield fh
            os.chmod(tmp, FILE_MODE)
            os.replace(tmp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise io_error(exc, final) from None
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def finalizing(self) -> Iterator[None]:
        """Held while index files are rebuilt, so two runs never interleave that."""
        with self._lock_file(self.record_dir / "finalize.lock"):
            yield

    def records(self) -> Iterator[dict[str, Any]]:
        """Every complete item's state, sorted by key (streams the journals)."""
        keyed = []
        for j in self.journals():
            first = _first_line(j)
            if first and "begin" in first:
                keyed.append((first["begin"]["key"], j))
        for _, j in sorted(keyed):
            state = read_journal(j)
            if state.complete:
                yield state.as_dict()


def _first_line(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.loads(fh.readline())
    except (OSError, ValueError):
        return None


@dataclass
class ItemState:
    key: str = ""
    fingerprint: str = ""
    info: dict[str, Any] = field(default_factory=dict)  # what begin recorded (source, seed, ...)
    dirs: list[str] = field(default_factory=list)  # folders the item created (removed on overwrite when empty)
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)  # part name -> {"files": {rel: sha}, "record": {...}}
    pending: dict[str, list[str]] = field(default_factory=dict)  # part -> rels announced but not recorded
    complete: dict[str, Any] | None = None

    def files(self) -> list[str]:
        out = [rel for p in self.parts.values() for rel in p["files"]]
        out += [rel for rels in self.pending.values() for rel in rels]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "info": self.info, "parts": self.parts, "complete": self.complete}


def read_journal(path: Path) -> ItemState:
    """Replay a journal; a torn last line (a kill mid-append) is ignored."""
    state = ItemState()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return state
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if "begin" in entry:
            b = entry["begin"]
            state = ItemState(key=b["key"], fingerprint=b["fingerprint"], info=b.get("info", {}))
        elif "dir" in entry:
            state.dirs.append(entry["dir"])
        elif "pending" in entry:
            state.pending[entry["pending"]] = entry["files"]
        elif "done" in entry:
            state.parts[entry["done"]] = {"files": entry["files"], "record": entry.get("record", {})}
            state.pending.pop(entry["done"], None)
        elif "complete" in entry:
            state.complete = entry["complete"]
    return state


class ItemWriter:
    """Writes one item's files under its lock; see the module docstring."""

    def __init__(self, out: OutputSet, key: str, fingerprint: str, journal: Path):
        self.out = out
        self.key = key
        self.fingerprint = fingerprint
        self.journal = journal
        self.state = ItemState()

    def open(self, *, overwrite: bool) -> None:
        self._end_torn_line()
        state = read_journal(self.journal)
        if state.key and state.fingerprint != self.fingerprint:
            if not overwrite:
                what = "complete" if state.complete else "partial"
                raise OutputExistsError(
                    f"{self.key}: the output holds a {what} result made with other settings "
                    f"({_describe_info(state.info)}); pass --overwrite to replace it, or choose another output folder")
            state = ItemState(dirs=self._remove(state))
        elif state.key and overwrite and state.complete:
            state = ItemState(dirs=self._remove(state))
        elif state.pending:
            # files linked by a run that died before recording them: ours, and incomplete
            for rels in state.pending.values():
                for rel in rels:
                    with contextlib.suppress(FileNotFoundError):
                        (self.out.root / rel).unlink()
            state.pending.clear()
        self.state = state
        if not state.key:
            self._rewrite_journal()  # (with the folders it made that still hold someone's files)

    def _end_torn_line(self) -> None:
        """A kill mid-append can leave a last line without its newline: end it, so the next entry
        starts a line of its own (the torn one is then skipped on replay, the next one is not)."""
        try:
            with open(self.journal, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                torn = fh.read(1) != b"\n"
        except (FileNotFoundError, OSError):
            return
        if torn:
            self._append_raw(b"\n")

    @property
    def complete(self) -> bool:
        return self.state.complete is not None

    def has(self, part: str) -> bool:
        return part in self.state.parts

    def begin(self, info: dict[str, Any]) -> None:
        """Record what this item is (kept in the journal's first line)."""
        if self.state.info != info:
            self.state.info = info
            self._rewrite_journal()

    def _rewrite_journal(self) -> None:
        self.state.key, self.state.fingerprint = self.key, self.fingerprint
        lines = [{"begin": {"key": self.key, "fingerprint": self.fingerprint, "info": self.state.info}}]
        lines += [{"dir": d} for d in self.state.dirs]
        lines += [{"done": n, "files": p["files"], "record": p["record"]} for n, p in self.state.parts.items()]
        data = "".join(json.dumps(x, default=str) + "\n" for x in lines).encode()
        self.out.write_bytes_replace(self.journal, data)

    def _append(self, entry: dict[str, Any]) -> None:
        self._append_raw((json.dumps(entry, default=str) + "\n").encode())

    def _append_raw(self, line: bytes) -> None:
        try:
            fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise io_error(exc, self.journal) from None

    def own_dir(self, rel: str) -> Path:
        """Create ``rel`` (a folder only this item writes into, e.g. ``OUT/<name>/``): it must not
        exist unless this item made it."""
        path = self.out.root / rel
        if rel in self.state.dirs:
            path.mkdir(parents=True, exist_ok=True)
            return path
        if path.exists() or path.is_symlink():
            raise OutputExistsError(
                f"{path} exists and was not written by backdrop; move it away or choose another output folder "
                "(--overwrite only replaces backdrop's own outputs)")
        self._append({"dir": rel})
        self.state.dirs.append(rel)
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise io_error(exc, path, "cannot create") from None
        return path

    def write_part(self, part: str, files: dict[str, bytes | Path], record: dict[str, Any] | None = None) -> dict[str, str]:
        """Put a part's files in place (no-replace) and record them: all or, after a kill, none
        counted. ``files`` maps rel paths to bytes, or to a source file to copy."""
        rels = list(files)
        self._append({"pending": part, "files": rels})
        self.state.pending[part] = rels
        shas: dict[str, str] = {}
        for rel, data in files.items():
            final = self.out.root / rel
            if isinstance(data, Path):
                shas[rel] = self.out.copy_new(data, final)
            else:
                self.out.link_new(data, final)
                shas[rel] = sha256_bytes(data)
        self._append({"done": part, "files": shas, "record": record or {}})
        self.state.pending.pop(part, None)
        self.state.parts[part] = {"files": shas, "record": record or {}}
        return shas

    def replace_part(self, part: str, files: dict[str, bytes | Path], record: dict[str, Any] | None = None) -> None:
        """Write a part again (e.g. run.json after more variants): its old files are ours."""
        old = self.state.parts.pop(part, None)
        for rel in (old or {}).get("files", {}):
            with contextlib.suppress(FileNotFoundError):
                (self.out.root / rel).unlink()
        self.write_part(part, files, record)

    def finish(self, summary: dict[str, Any] | None = None) -> None:
        self._append({"complete": summary or {}})
        self.state.complete = summary or {}

    def _remove(self, state: ItemState) -> list[str]:
        """Remove what ``state`` says this item wrote (and nothing else). Returns the folders it
        made that stay because they hold other files: they are still this item's to write into."""
        for rel in state.files():
            path = self.out.root / rel
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        kept = []
        for rel in sorted(state.dirs, key=len, reverse=True):
            try:
                (self.out.root / rel).rmdir()  # only when empty: the user's files stay
            except FileNotFoundError:
                pass
            except OSError:
                kept.append(rel)
        with contextlib.suppress(FileNotFoundError):
            self.journal.unlink()
        return kept


def _describe_info(info: dict[str, Any]) -> str:
    bits = [f"{k.replace('_', ' ')} {info[k]}" for k in ("source", "base_seed", "generator") if k in info]
    return ", ".join(bits) or "unknown settings"


def _mkstemp(path: Path, suffix: str, tmp_dir: str | Path | None) -> tuple[int, str]:
    """A temporary file beside ``path``, or in ``tmp_dir`` named after this process (so
    :func:`remove_dead_temps` can tell a killed writer's leftovers from a live one's)."""
    if tmp_dir is None:
        return tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    Path(tmp_dir).mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(prefix=f"{os.getpid()}.", suffix=".part", dir=tmp_dir)


def remove_dead_temps(tmp_dir: str | Path) -> int:
    """Remove the temporary files in ``tmp_dir`` (as written with ``tmp_dir=``) whose process is
    gone (``kill -9`` included); returns how many. A live writer's are left alone."""
    gone = 0
    try:
        entries = list(os.scandir(tmp_dir))
    except OSError:
        return 0
    for f in entries:
        try:
            pid = int(f.name.split(".", 1)[0])
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # alive (or another user's process: PermissionError below)
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        with contextlib.suppress(OSError):
            os.unlink(f.path)
            gone += 1
    return gone


def write_new(path: str | Path, data: bytes, *, tmp_dir: str | Path | None = None) -> bool:
    """Write ``data`` to ``path`` only if no file of that name exists (a temporary file linked
    into place: never a replace, never a partial file). False when the name is taken.
    ``tmp_dir`` (same file system): where the temporary file goes instead of beside ``path``."""
    path = Path(path)
    fd, tmp = _mkstemp(path, ".bdtmp", tmp_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, FILE_MODE)
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        raise io_error(exc, path) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def fingerprint(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


# -- atomic writes outside an output set ----------------------------------------------------------
# The one home of backdrop's atomic writes: the output set's methods above (no-replace links and
# replaced index files), write_new (no-replace, anywhere), and these (replace) for the files a
# data set format writes, the studio and the model store.


def atomic_write_bytes(path: str | Path, data: bytes, *, tmp_dir: str | Path | None = None) -> None:
    """Write or replace ``path`` with ``data`` through a temporary file beside it (or in
    ``tmp_dir``, as for :func:`write_new`) and one rename."""
    path = Path(path)
    fd, tmp = _mkstemp(path, ".tmp", tmp_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_text(path: str | Path, *, newline: str | None = None) -> Iterator[Any]:
    """A text stream (UTF-8) that atomically becomes ``path`` when the block ends without error
    (its folder is made if needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as fh:
            yield fh
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    """Copy a file byte for byte through a temporary file and one rename (its folder made if needed)."""
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(dst), Path(src).read_bytes())


def install_file(tmp: str | Path, dest: str | Path, *, mode: int | None = None) -> None:
    """Move a finished temporary file (made beside ``dest``) into place, replacing ``dest``;
    ``mode`` (default: an ordinary file's) is set first, so the file never appears as 0600."""
    os.chmod(tmp, FILE_MODE if mode is None else mode)
    os.replace(tmp, dest)


def install_dir(tmp: str | Path, dest: str | Path) -> None:
    """Move a finished temporary folder (made beside ``dest``) into place; a ``dest`` already there
    (backdrop's own cache or store entry, incomplete) is removed first."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
