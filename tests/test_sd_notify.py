"""sd_notify against real unix datagram sockets standing where systemd's would be."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from waihu import sd_notify


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(5)
    yield sock
    sock.close()


def test_sends_one_datagram_to_a_socket_path(
    receiver: socket.socket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notify"
    receiver.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    assert sd_notify.notify("READY=1\nSTATUS=serving 3 calls")
    assert receiver.recv(4096) == b"READY=1\nSTATUS=serving 3 calls"


def test_abstract_namespace_address(
    receiver: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"waihu-test-{os.getpid()}-{secrets.token_hex(4)}"
    receiver.bind("\0" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    assert sd_notify.notify("STOPPING=1")
    assert receiver.recv(4096) == b"STOPPING=1"


def test_without_notify_socket_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify.notify("READY=1") is False


def test_missing_socket_is_logged_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    with caplog.at_level(logging.WARNING, logger="waihu.sd_notify"):
        assert sd_notify.notify("READY=1") is False
    assert "cannot notify systemd" in caplog.text
    assert "gone" in caplog.text


def test_unsupported_address_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    with caplog.at_level(logging.WARNING, logger="waihu.sd_notify"):
        assert sd_notify.notify("READY=1") is False
    assert "not a unix socket address" in caplog.text
