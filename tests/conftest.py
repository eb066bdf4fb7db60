"""Test setup: no network (a hidden download fails loudly), offline hubs, and shared fixtures."""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest

# Libraries that reach model hubs must stay offline; subprocesses inherit this too.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# A Ray started by the tests is a one-machine Ray: it must bind and talk on loopback only (Ray
# otherwise picks the address of the interface that routes outward). Read when ray is imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


class NetworkBlocked(RuntimeError):
    pass


def _is_local(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _guarded_connect(self, address):
    if not _is_local(address):
        raise NetworkBlocked(f"test tried to reach the network: {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_local(address):
        raise NetworkBlocked(f"test tried to reach the network: {address!r}")
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if host not in (None, "localhost", "127.0.0.1", "::1", "0.0.0.0", ""):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise NetworkBlocked(f"test tried to resolve {host!r}") from None
        if not ipaddress.ip_address(host).is_loopback:
            raise NetworkBlocked(f"test tried to reach {host!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
socket.getaddrinfo = _guarded_getaddrinfo


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: needs --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _session_home(tmp_path_factory):
    """Module- and session-scoped fixtures run before the per-test home below: give them an empty
    store and cache of their own too, never the user's."""
    if "BACKDROP_TEST_KEEP_HOME" in os.environ:
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BACKDROP_HOME", str(tmp_path_factory.mktemp("session_home")))
        yield


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Each test gets its own empty model store unless it sets BACKDROP_HOME itself."""
    if "BACKDROP_TEST_KEEP_HOME" not in os.environ:
        monkeypatch.setenv("BACKDROP_HOME", str(tmp_path_factory.mktemp("backdrop_home")))


# Tiny random models (SD, inpainting SD, GIT, BLIP), built once per session, shared by test files.
from conftest_models import tiny_blip, tiny_git, tiny_sd, tiny_sd_inpaint, torch_one_thread  # noqa: E402,F401
