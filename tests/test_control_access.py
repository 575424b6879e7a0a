"""Who may reach the control socket and change the daemon's state, and who asked.

A real ``ControlServer`` on a real unix socket in tmp_path, answering through
``Recorder``, a handler that notes which method ran for which ``current_peer``.

Other users are real users: a client process starts as root, drops to
``nobody`` (``setgroups``/``setgid``/``setuid``) and only then connects, since
the kernel records a client's credentials at ``connect``. It drops privileges
itself rather than through ``subprocess``'s ``user=``/``group=``: the
interpreter lives under root's home, which ``nobody`` may not execute. It
``chdir``s into tmp_path while still root and connects by the relative name,
because pytest's base directory above tmp_path is root's alone (0700); tmp_path
itself is opened to all (0711), so the socket's own mode and group are the
only gate, as in the runtime directory. Throwaway groups are made with
``groupadd`` and removed after each test. The tests that make groups or act
as another user need root and are skipped otherwise.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import secrets
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from waihu.control.server import FORBIDDEN, ControlServer, ControlSocketError, Peer, current_peer

TIMEOUT = 30  # seconds; generous, the machine is shared
NOBODY_UID = 65534  # Debian's nobody and nogroup
NOGROUP_GID = 65534
ACCOUNTLESS_UID = 4_242_424  # no account has it
SOCKET_NAME = "control.sock"
PLACE_CALL = {"target": "1001", "script": "demo"}

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="making groups and acting as another user needs root"
)

# The client process: drops to the given uid, gid and supplementary groups,
# prints its pid, connects, and prints one reply line per request — or how
# the kernel refused the connection. At a PAUSE it says so and waits for a
# line on its stdin, keeping its connection open meanwhile.
CLIENT = r"""
import json, os, socket, sys

directory, name, uid, gid, groups, *requests = sys.argv[1:]
os.chdir(directory)  # while root: the directories above are root's alone
os.setgroups([int(g) for g in groups.split(",") if g])
os.setgid(int(gid))
os.setuid(int(uid))
print(json.dumps({"pid": os.getpid()}), flush=True)
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
    try:
        sock.connect(name)
    except PermissionError as exc:
        print(json.dumps({"refused": exc.strerror}))
        sys.exit()
    lines = sock.makefile("rwb")
    for request in requests:
        if request == "PAUSE":
            print(json.dumps({"paused": True}), flush=True)
            sys.stdin.readline()
            continue
        lines.write(request.encode() + b"\n")
        lines.flush()
        sys.stdout.write(lines.readline().decode())
"""


class Recorder:
    """A tiny daemon stand-in: answers status, call and shutdown, noting who asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, Peer | None]] = []

    async def status(self) -> dict[str, Any]:
        self.asked.append(("status", current_peer.get()))
        return {"draining": False}

    async def call(
        self,
        target: str,
        script: str,
        trunk: str | None = None,
        variables: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        self.asked.append(("call", current_peer.get()))
        return {"call_id": "c-1"}

    async def shutdown(self) -> dict[str, Any]:
        self.asked.append(("shutdown", current_peer.get()))
        return {"draining": True, "live_calls": 0}


@pytest.fixture
def make_group() -> Iterator[Callable[..., grp.struct_group]]:
    """Makes throwaway system groups (with the given members); removes them afterwards."""
    made: list[str] = []

    def make(*members: str) -> grp.struct_group:
        name = "waihutest" + secrets.token_hex(4)
        command = ["groupadd", "--system", name]
        if members:
            command += ["--users", ",".join(members)]
        subprocess.run(command, check=True, capture_output=True)
        made.append(name)
        return grp.getgrnam(name)

    yield make
    for name in made:
        subprocess.run(["groupdel", name], check=False, capture_output=True)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    tmp_path.chmod(0o711)  # anyone may pass through: only the socket's own rights decide
    return tmp_path / SOCKET_NAME


PAUSE = "PAUSE"  # a request to ask_as: the client waits until `meanwhile` has run
PAUSED = b'{"paused": true}\n'
Request = str | tuple[str, dict[str, Any]]  # a method, or a method and its params


async def ask_as(
    sock: Path,
    uid: int,
    gid: int,
    *requests: Request,
    groups: tuple[int, ...] = (),
    meanwhile: Callable[[], object] = lambda: None,
) -> tuple[int, list[dict[str, Any]]]:
    """Run the client process as ``uid``/``gid``/``groups``; its pid and its replies.

    At a ``PAUSE`` among the requests, ``meanwhile`` runs (in a thread) while
    the client waits with its connection open.
    """
    lines = []
    for n, request in enumerate(requests):
        method, params = (request, {}) if isinstance(request, str) else request
        lines.append(
            PAUSE if method == PAUSE else json.dumps({"id": n, "method": method, "params": params})
        )
    argv = [sys.executable, "-c", CLIENT, str(sock.parent), sock.name, str(uid), str(gid)]
    argv += [",".join(map(str, groups)), *lines]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    process = await trio.lowlevel.open_process(argv, **pipes)
    try:
        assert process.stdin and process.stdout and process.stderr
        output = b""
        async for chunk in process.stdout:
            output += chunk
            if output.endswith(PAUSED):
                output = output.removesuffix(PAUSED)
                await trio.to_thread.run_sync(meanwhile)
                await process.stdin.send_all(b"\n")
        errors = b"".join([chunk async for chunk in process.stderr])
        await process.wait()
    finally:
        if process.returncode is None:  # the test failed midway: do not leave it waiting
            process.kill()
            await process.wait()
    assert process.returncode == 0, errors.decode()
    first, *replies = (json.loads(line) for line in output.decode().splitlines())
    return first["pid"], replies


async def serve(
    nursery: trio.Nursery,
    path: Path,
    recorder: Recorder,
    *,
    group: grp.struct_group | None = None,
    admin_group: grp.struct_group | None = None,
) -> None:
    """Start a ControlServer at ``path`` with these groups (None: not configured)."""
    server = ControlServer(
        path,
        recorder,
        group=group and group.gr_name,
        admin_group=admin_group and admin_group.gr_name,
    )
    await nursery.start(server.run)


def nobody(pid: int) -> Peer:
    return Peer(pid=pid, uid=NOBODY_UID, gid=NOGROUP_GID, user="nobody")


def login_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


# ───────────────────────── the socket file ─────────────────────────


@needs_root
async def test_the_socket_is_0660_in_the_configured_group_once_started(
    nursery: trio.Nursery, sock: Path, recorder: Recorder, make_group: Callable[..., Any]
) -> None:
    operators = make_group()
    with trio.fail_after(TIMEOUT):
        await serve(nursery, sock, recorder, group=operators)
        info = os.stat(sock)
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o660
        assert info.st_gid == operators.gr_gid
        # and the kernel goes by it: in the group, served; outside it, not even connected
        _, replies = await ask_as(sock, NOBODY_UID, operators.gr_gid, "status")
        assert replies == [{"id": 0, "ok": True, "result": {"draining": False}}]
        _, replies = await ask_as(sock, NOBODY_UID, NOGROUP_GID, "status")
        assert replies == [{"refused": "Permission denied"}]


@pytest.mark.parametrize(
    "configured", [False, pytest.param(True, marks=needs_root)], ids=["own group", "a group"]
)
async def test_the_socket_appears_at_its_path_whole_whatever_the_umask(
    nursery: trio.Nursery,
    tmp_path: Path,
    recorder: Recorder,
    make_group: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    configured: bool,
) -> None:
    """By construction: the socket is bound, given its group and mode and set
    listening in a directory only the daemon's user may enter, and only then
    linked to its path. Checked at the instant of that link, under the loosest
    umask (0), with which a socket bound at its path would be 0777 until its chmod.
    """
    path = tmp_path / SOCKET_NAME
    group = make_group() if configured else None
    seen: list[dict[str, Any]] = []
    real_link = os.link

    def watching_link(source: Any, destination: Any, **kwargs: Any) -> None:
        staged = Path(source)
        if Path(destination) == path:
            private = os.stat(staged.parent)
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(staged))  # refused unless already listening
            finally:
                probe.close()
            seen.append(
                {
                    "mode": stat.S_IMODE(os.lstat(staged).st_mode),
                    "gid": os.lstat(staged).st_gid,
                    "private_mode": stat.S_IMODE(private.st_mode),
                    "private_owner": private.st_uid,
                    "beside_path": staged.parent.parent == tmp_path,
                    "path_exists": path.exists(),
                }
            )
        real_link(source, destination, **kwargs)

    monkeypatch.setattr(os, "link", watching_link)
    umask = os.umask(0)
    try:
        with trio.fail_after(TIMEOUT):
            await serve(nursery, path, recorder, group=group)
    finally:
        os.umask(umask)
    assert seen == [
        {
            "mode": 0o660,
            "gid": group.gr_gid if group else os.getegid(),
            "private_mode": 0o700,
            "private_owner": os.geteuid(),
            "beside_path": True,
            "path_exists": False,
        }
    ]
    assert os.listdir(tmp_path) == [SOCKET_NAME]  # the private directory is gone
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660


@pytest.mark.parametrize("key", ["group", "admin_group"])
async def test_an_unknown_group_fails_start_naming_it(
    tmp_path: Path, recorder: Recorder, key: str
) -> None:
    path = tmp_path / SOCKET_NAME
    config_key = {"group": "daemon.control_group", "admin_group": "daemon.control_admin_group"}
    message = rf"{config_key[key]}: no group named 'no-such-operators'"
    with trio.fail_after(TIMEOUT):
        with pytest.RaisesGroup(pytest.RaisesExc(ControlSocketError, match=message)):
            async with trio.open_nursery() as nursery:
                server = ControlServer(path, recorder, **{key: "no-such-operators"})
                await nursery.start(server.run)
    assert os.listdir(tmp_path) == []


async def test_a_path_of_107_bytes_is_served_and_one_of_108_refused_naming_it(
    nursery: trio.Nursery, tmp_path: Path, recorder: Recorder
) -> None:
    def path_of(size: int) -> Path:  # bytes: sun_path is 108, with its terminating NUL
        return tmp_path / ("x" * (size - len(os.fsencode(tmp_path)) - 1))

    with trio.fail_after(TIMEOUT):
        await nursery.start(ControlServer(path_of(107), recorder).run)
        stream = await trio.open_unix_socket(str(path_of(107)))
        async with stream:
            await stream.send_all(b'{"id": 1, "method": "status"}\n')
            assert json.loads(await stream.receive_some(65536))["ok"] is True
        too_long = (
            rf"control socket path {re.escape(str(path_of(108)))} is too long: .* at most 107"
        )
        with pytest.RaisesGroup(pytest.RaisesExc(ControlSocketError, match=too_long)):
            async with trio.open_nursery() as second:
                await second.start(ControlServer(path_of(108), recorder).run)
    assert os.listdir(tmp_path) == [path_of(107).name]


# ───────────────────────── who may change state ─────────────────────────


@needs_root
@pytest.mark.parametrize(
    ("uid", "user"),
    [(NOBODY_UID, "nobody"), (ACCOUNTLESS_UID, f"uid {ACCOUNTLESS_UID}")],
    ids=["a user", "a uid without an account"],
)
async def test_a_member_outside_the_admin_group_reads_but_may_not_change_state(
    nursery: trio.Nursery,
    sock: Path,
    recorder: Recorder,
    make_group: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    uid: int,
    user: str,
) -> None:
    operators, admins = make_group(), make_group()
    with trio.fail_after(TIMEOUT):
        await serve(nursery, sock, recorder, group=operators, admin_group=admins)
        pid, replies = await ask_as(
            sock, uid, operators.gr_gid, "status", "shutdown", ("call", PLACE_CALL)
        )
    assert replies[0] == {"id": 0, "ok": True, "result": {"draining": False}}
    for refused in replies[1:]:
        assert refused["ok"] is False and refused["error"]["code"] == FORBIDDEN
        assert f"only members of group {admins.gr_name!r}" in refused["error"]["message"]
        assert f"{user} is not one" in refused["error"]["message"]
    served = Peer(pid=pid, uid=uid, gid=operators.gr_gid, user=user)
    assert recorder.asked == [("status", served)]  # shutdown and call never reached it
    assert f"refused shutdown from {served}: not in group {admins.gr_name!r}" in caplog.text
    if uid == ACCOUNTLESS_UID:  # named once, not "uid N (pid P, uid N)"
        assert f"from uid {uid} (pid {pid}): not in group" in caplog.text


@needs_root
@pytest.mark.parametrize("how", ["listed as a member", "running with it as its group"])
async def test_an_admin_group_member_may_change_state_and_is_logged(
    nursery: trio.Nursery,
    sock: Path,
    recorder: Recorder,
    make_group: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    operators = make_group()
    admins = make_group("nobody") if how == "listed as a member" else make_group()
    gid = NOGROUP_GID if how == "listed as a member" else admins.gr_gid
    caplog.set_level("INFO", logger="waihu.control")
    with trio.fail_after(TIMEOUT):
        await serve(nursery, sock, recorder, group=operators, admin_group=admins)
        pid, replies = await ask_as(
            sock, NOBODY_UID, gid, "shutdown", "shutdown", groups=(operators.gr_gid,)
        )
    assert [reply["ok"] for reply in replies] == [True, True]
    peer = Peer(pid=pid, uid=NOBODY_UID, gid=gid, user="nobody")
    assert recorder.asked == [("shutdown", peer), ("shutdown", peer)]
    assert f"shutdown from nobody (pid {pid}, uid {NOBODY_UID})" in caplog.text


@needs_root
async def test_leaving_the_admin_group_takes_effect_from_the_next_connection(
    nursery: trio.Nursery, sock: Path, recorder: Recorder, make_group: Callable[..., Any]
) -> None:
    operators, admins = make_group(), make_group("nobody")
    member = {"groups": (operators.gr_gid,)}

    def leave() -> None:
        subprocess.run(
            ["gpasswd", "--delete", "nobody", admins.gr_name], check=True, capture_output=True
        )

    with trio.fail_after(TIMEOUT):
        await serve(nursery, sock, recorder, group=operators, admin_group=admins)
        _, replies = await ask_as(
            sock, NOBODY_UID, NOGROUP_GID, "shutdown", PAUSE, "shutdown", meanwhile=leave, **member
        )
        assert [reply["ok"] for reply in replies] == [True, True]  # decided at the first
        _, replies = await ask_as(sock, NOBODY_UID, NOGROUP_GID, "shutdown", **member)
        assert replies[0]["error"]["code"] == FORBIDDEN


@needs_root
async def test_without_an_admin_group_every_member_may_change_state(
    nursery: trio.Nursery, sock: Path, recorder: Recorder, make_group: Callable[..., Any]
) -> None:
    operators = make_group()
    with trio.fail_after(TIMEOUT):
        await serve(nursery, sock, recorder, group=operators)
        pid, replies = await ask_as(
            sock, NOBODY_UID, NOGROUP_GID, "shutdown", groups=(operators.gr_gid,)
        )
    assert replies[0]["ok"] is True
    assert recorder.asked == [("shutdown", nobody(pid))]


@needs_root
async def test_root_may_change_state_outside_the_admin_group(
    nursery: trio.Nursery, tmp_path: Path, recorder: Recorder, make_group: Callable[..., Any]
) -> None:
    admins = make_group()
    path = tmp_path / SOCKET_NAME
    with trio.fail_after(TIMEOUT):
        await serve(nursery, path, recorder, admin_group=admins)
        stream = await trio.open_unix_socket(str(path))
        async with stream:
            await stream.send_all(b'{"id": 1, "method": "shutdown"}\n')
            reply = json.loads(await stream.receive_some(65536))
    assert reply == {"id": 1, "ok": True, "result": {"draining": True, "live_calls": 0}}
    assert recorder.asked == [("shutdown", Peer(pid=os.getpid(), uid=0, gid=0, user="root"))]


# ───────────────────────── who asked ─────────────────────────


async def test_the_handler_sees_the_asking_process_as_current_peer(
    nursery: trio.Nursery, tmp_path: Path, recorder: Recorder
) -> None:
    path = tmp_path / SOCKET_NAME
    with trio.fail_after(TIMEOUT):
        await nursery.start(ControlServer(path, recorder).run)
        stream = await trio.open_unix_socket(str(path))
        async with stream:
            await stream.send_all(b'{"id": 1, "method": "status"}\n')
            assert json.loads(await stream.receive_some(65536))["ok"] is True
    me = Peer(pid=os.getpid(), uid=os.getuid(), gid=os.getgid(), user=login_name(os.getuid()))
    assert recorder.asked == [("status", me)]
