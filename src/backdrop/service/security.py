"""Who may call, and what a job may read.

- **Token.** Every route but ``/v1/health`` wants ``Authorization: Bearer TOKEN`` (A1111 clients may
  send HTTP Basic with the token as the password instead). The token comes from ``BACKDROP_TOKEN``,
  else from ``ROOT/token`` (made on first start, mode 0600). Comparison in constant time.
- **Binding.** A non-loopback address without a token is refused (:func:`check_bind`).
- **Paths.** :class:`PathGuard` accepts a server path only under one of the ``--allow-root``
  folders, after resolving it (``..`` and symlinks cannot lead out).
"""

from __future__ import annotations

import base64
import ipaddress
import os
import secrets
import time
from pathlib import Path
from typing import Iterable, Optional

from ..errors import ConfigError
from .errors import ApiError

TOKEN_ENV = "BACKDROP_TOKEN"


def load_token(root: Path, *, create: bool = True) -> tuple[Optional[str], bool]:
    """(token, made_now): ``$BACKDROP_TOKEN``, else ``ROOT/token``, else a new one written there
    (0600) when ``create``."""
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return env, False
    path = Path(root) / "token"
    try:
        text = path.read_text().strip()
        if text:
            return text, False
    except FileNotFoundError:
        pass
    if not create:
        return None, False
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # 0600 from its first byte
    except FileExistsError:  # a server started at the same moment made it: use that one
        for _ in range(50):
            text = path.read_text().strip()
            if text:
                return text, False
            time.sleep(0.02)
        raise
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")  # one small write: a reader sees nothing or all of it
    return token, True


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: Optional[str]) -> None:
    """Serving beyond this machine without a token is refused."""
    if not is_loopback(host) and not token:
        raise ConfigError(f"--host {host}: binding to a non-loopback address needs a token "
                          f"(set {TOKEN_ENV}, or drop --no-token)")


def authorized(header: Optional[str], token: Optional[str]) -> bool:
    if token is None:
        return True
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return secrets.compare_digest(value.encode(), token.encode())
    if scheme.lower() == "basic":
        try:
            _, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return secrets.compare_digest(password.encode(), token.encode())
    return False


class PathGuard:
    """Server paths a client may name: only inside the allowed roots, resolved first."""

    def __init__(self, roots: Iterable[str | Path]):
        self.roots = tuple(Path(r).expanduser().resolve() for r in roots)

    def check(self, path: str | Path, what: str = "source") -> Path:
        """The resolved path, or ApiError 403 (outside every root) / 404 (missing)."""
        raw = str(path)
        if not raw or "\x00" in raw:
            raise ApiError(422, f"{what}: expected a path", option=what)
        if not self.roots:
            raise ApiError(403, f"{what}: server paths are not allowed (start the server with --allow-root DIR)",
                           option=what)
        p = Path(raw).expanduser()
        if not p.is_absolute():
            p = self.roots[0] / p
        resolved = p.resolve()  # follows symlinks: a link out of the root ends outside it
        if not any(resolved == r or r in resolved.parents for r in self.roots):
            raise ApiError(403, f"{what}: {raw} is outside the allowed roots", option=what)
        if not resolved.exists():
            raise ApiError(404, f"{what}: {raw}: no such file or folder", option=what)
        return resolved

    def inside(self, base: Path, rel: str) -> Path:
        """``base/rel`` if it stays inside ``base`` once resolved (results, uploads), else 404."""
        base = base.resolve()
        target = (base / rel).resolve()
        if target != base and base not in target.parents:
            raise ApiError(404, f"no such file: {rel}")
        return target
