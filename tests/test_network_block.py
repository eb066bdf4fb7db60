import socket

import pytest

from conftest import NetworkBlocked


def test_outside_connection_is_refused():
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("example.com", 80), timeout=1)


def test_outside_ip_is_refused():
    s = socket.socket()
    try:
        with pytest.raises(NetworkBlocked):
            s.connect(("93.184.216.34", 80))
    finally:
        s.close()
