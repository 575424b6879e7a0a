"""``waihuctl``: the operator's command line for a running waihud.

Its subcommands, their options and ``--help`` come from the command table in
``protocol`` and, for the commands it runs itself (``script validate``,
``campaign import``…), from ``local``; this module adds the global options,
the connection and the output. Commands sharing a first word form a group
with its own help (``waihuctl campaign --help``). It talks to the daemon over
the control socket with blocking stdlib sockets: it is a short-lived command,
not part of the daemon. ``watch`` prints the events the daemon pushes after
its reply, one line each, until interrupted (or until the watched call ends).

``ControlClient`` is also usable on its own, by scripts and tests::

    with ControlClient("/run/waihu/control.sock") as client:
        print(client.request("status")["uptime"])

Exit status: 0 on success, 1 when the daemon cannot be reached or answers
with an error (or a local command fails), 2 for a usage error, 130 when
interrupted. With ``--json`` (anywhere on the command line) a failure is
printed as JSON on stdout instead of text on stderr, ``{"ok": false,
"error": {"code": ..., "message": ...}}``: the daemon's code, or
``unreachable`` (no connection), ``no_reply``, or ``usage`` (a usage error,
exit status 2 as without ``--json``).

An unknown command word says which are known and the closest
(``difflib``): ``unknown command 'stauts'; did you mean 'status'?``; so does
a script file that does not exist, among the scripts beside it (on stderr,
before the command reports the file its own way).

``call --wait`` exits by how the call ended: 0 answered, 3
(``EXIT_NOT_TAKEN``) when the callee did not take it (busy, no answer,
declined), 4 (``EXIT_NOT_PLACED``) when it could not be put through (an
invalid number, a trunk fault, cut off by a shutdown). While it waits, a
terminal sees one line rewritten in place with the time so far.

What it is not: the server (``server``), or anything the daemon imports.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import itertools
import json
import os
import socket
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NoReturn

import attrs

from waihu.control.local import LOCAL_COMMANDS, LOCAL_COMMANDS_BY_NAME, LocalCommand
from waihu.control.protocol import (
    COMMANDS,
    COMMANDS_BY_NAME,
    DEFAULT_SOCKET,
    MAX_LINE_BYTES,
    SOCKET_ENV,
    WAIT_HELP,
    Command,
    ControlError,
    Param,
    decode_line,
    encode_request,
    parse_reply,
)
from waihu.control.render import emit, render_event

__all__ = [
    "GLOBAL_OPTIONS",
    "ConnectFailed",
    "ControlClient",
    "GlobalOption",
    "NoReply",
    "build_parser",
    "call_exit_status",
    "did_you_mean",
    "groups",
    "main",
    "talks_to_daemon",
    "waihu_version",
    "waihuctl_commands",
]

PROG = "waihuctl"
DEFAULT_TIMEOUT = 10.0  # seconds for one reply; a `call` answers once dialling starts
WAIT_POLL_SECONDS = 1.0  # --wait asks for the call's state this often
RECEIVE_BYTES = 65536
MAX_REPLY_BYTES = 64 * MAX_LINE_BYTES  # a call.show of a long call is large, but not this
ENDED = ("ended", "failed")  # call states, and kinds of a call's last event
EXIT_FAILED = 1
EXIT_USAGE = 2  # as argparse exits for a usage error
# `call --wait`: how the call ended, for scripts (0: answered)
EXIT_NOT_TAKEN = 3  # the callee did not take it: busy, no answer, declined
EXIT_NOT_PLACED = 4  # it could not be put through: a bad number, a trunk fault, cut off
NOT_TAKEN = frozenset({"busy", "no_answer", "rejected"})  # outcomes that are the callee's doing
REWRITE_LINE = "\r\x1b[K"  # back to the line's start and clear it (ECMA-48 EL)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
# --json codes for failures no daemon answered: waihuctl's own, beside the protocol's
UNREACHABLE = "unreachable"
NO_REPLY = "no_reply"
USAGE = "usage"
JSON_FLAG = "--json"
SCRIPT_SUFFIX = ".toml"  # what "did you mean" offers for a script file that is not there
SCRIPT_FILE_PARAMS = ("file", "files", "cases")  # params of script commands naming inputs


class ConnectFailed(Exception):
    """The control socket cannot be reached; the message says why and what to check."""


class NoReply(Exception):
    """The daemon did not answer in time, or closed the connection, or answered garbage."""


class ControlClient:
    """A blocking connection to waihud's control socket.

    Raises ConnectFailed from the constructor when the daemon cannot be
    reached. ``request`` returns a method's result, raises ControlError for an
    error reply and NoReply when no proper reply comes within ``timeout``.
    After a streaming request (``watch``), ``events`` yields what is pushed.
    """

    def __init__(self, path: Path | str, *, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.path = str(path)
        self._ids = itertools.count(1)
        self._buffer = b""
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(self.path)
        except OSError as exc:
            self._sock.close()
            hint = (
                "are you in the waihu group?"
                if isinstance(exc, PermissionError)
                else "is waihud running?"
            )
            reason = exc.strerror or str(exc)
            raise ConnectFailed(f"cannot connect to {self.path}: {reason} ({hint})") from None

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self._sock.close()

    def request(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Send one request and return its result."""
        request_id = next(self._ids)
        try:
            self._sock.sendall(encode_request(request_id, method, params))
            while True:
                message = decode_line(self._read_line())
                if "event" in message and "ok" not in message:
                    continue  # pushed events are not replies
                if message.get("id") != request_id:
                    raise NoReply(f"reply for request {message.get('id')!r}, not {request_id}")
                return parse_reply(message)
        except TimeoutError:
            raise NoReply(f"no reply from waihud within {self._sock.gettimeout():g} s") from None
        except OSError as exc:
            raise NoReply(f"connection to waihud lost: {exc.strerror or exc}") from None

    def events(self) -> Iterator[dict[str, Any]]:
        """Pushed event messages as they come, with no time limit.

        Ends only by raising NoReply when the connection ends; lines that are
        not events (there are none unless requests are sent meanwhile) are skipped.
        """
        self._sock.settimeout(None)  # a quiet hour without calls is not a failure
        try:
            while True:
                message = decode_line(self._read_line("waihud closed the connection"))
                if "event" in message and "ok" not in message:
                    yield message
        except OSError as exc:
            raise NoReply(f"connection to waihud lost: {exc.strerror or exc}") from None

    def _read_line(self, closed: str = "waihud closed the connection without replying") -> bytes:
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_REPLY_BYTES:
                raise NoReply(f"reply longer than {MAX_REPLY_BYTES} bytes")
            data = self._sock.recv(RECEIVE_BYTES)
            if not data:
                raise NoReply(closed)
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line


# ───────────────────────── the command line ─────────────────────────


@attrs.frozen(kw_only=True)
class GlobalOption:
    """An option of waihuctl itself, given before the subcommand."""

    flag: str
    help: str
    metavar: str | None = None  # None: a switch taking no value


# given before or after the command: `waihuctl --json calls` and `waihuctl calls --json`
GLOBAL_OPTIONS: tuple[GlobalOption, ...] = (
    GlobalOption(
        flag="--socket",
        metavar="PATH",
        help=f"the daemon's control socket (default: ${SOCKET_ENV}, else {DEFAULT_SOCKET})",
    ),
    GlobalOption(flag="--json", help="print the raw result as JSON instead of text"),
    GlobalOption(
        flag="--timeout",
        metavar="SECONDS",
        help=f"how long to wait for each reply (default {DEFAULT_TIMEOUT:g})",
    ),
)


AnyCommand = Command | LocalCommand


def waihuctl_commands() -> list[AnyCommand]:
    """Every subcommand of waihuctl, grouped by first word in the tables' order.

    A control method is spelled by the local command of its name if there is
    one (``campaign create`` reads a file), else by its own entry, unless it
    is not ``spelled`` (a local step sends it).
    """
    spelled: list[AnyCommand] = [
        LOCAL_COMMANDS_BY_NAME.get(c.name, c) for c in COMMANDS if c.spelled
    ]
    spelled += [c for c in LOCAL_COMMANDS if c.name not in COMMANDS_BY_NAME]
    first_seen = {}
    for command in spelled:
        first_seen.setdefault(command.words[0], len(first_seen))
    return sorted(spelled, key=lambda c: first_seen[c.words[0]])  # stable: table order within


def groups() -> dict[str, list[AnyCommand]]:
    """First word → its subcommands, for words that are not a command themselves
    (``campaign``, ``dnc``, ``script``): ``waihuctl WORD --help`` lists them."""
    commands = waihuctl_commands()
    names = {_spoken(c) for c in commands}
    found: dict[str, list[AnyCommand]] = {}
    for command in commands:
        if len(command.words) > 1 and command.words[0] not in names:
            found.setdefault(command.words[0], []).append(command)
    return found


def talks_to_daemon(command: AnyCommand) -> bool:
    """Whether the command connects to the daemon (and so takes the global options)."""
    return isinstance(command, Command) or bool(command.sends)


def _spoken(command: AnyCommand) -> str:
    return " ".join(command.words)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
    return value


def _param_type(param: Param) -> Any:
    """An argparse ``type`` that converts a word and checks it as the server would."""

    def convert(text: str) -> Any:
        if param.type in (int, float):
            try:
                value: Any = param.type(text)
            except ValueError:
                kind = "an integer" if param.type is int else "a number"
                raise argparse.ArgumentTypeError(f"not {kind}: {text!r}") from None
        elif param.type is dict:
            key, sep, value = text.partition("=")
            if not sep or not key:
                raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
            return (key, value)
        elif param.type is list:
            return text  # one word of the list; argparse gathers them
        else:
            value = text
        problem = param.problem(value)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value

    convert.__name__ = param.name  # argparse names it in "invalid NAME value"
    return convert


def _add_global_options(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    for option in GLOBAL_OPTIONS:
        # after the command, an option left out must not undo one given before it
        extra: dict[str, Any] = {"default": argparse.SUPPRESS} if after_command else {}
        if option.metavar is None:
            parser.add_argument(option.flag, action="store_true", help=option.help, **extra)
        else:
            kind = _positive_seconds if option.flag == "--timeout" else str
            parser.add_argument(
                option.flag, metavar=option.metavar, type=kind, help=option.help, **extra
            )


def _add_param(sub: argparse.ArgumentParser, param: Param) -> None:
    dest = f"param_{param.name}"
    if param.positional:
        sub.add_argument(
            dest,
            metavar=param.placeholder,
            type=_param_type(param),
            nargs="+" if param.type is list else None,
            help=param.help,
        )
    elif param.type is bool:
        # a switch sets the opposite of the default; not given, the default applies
        sub.add_argument(
            param.option, dest=dest, action="store_const", const=not param.default, help=param.help
        )
    elif param.type in (dict, list):
        sub.add_argument(
            param.option,
            dest=dest,
            metavar=param.placeholder,
            type=_param_type(param),
            action="append",
            required=param.required,
            help=param.help,
        )
    else:
        sub.add_argument(
            param.option,
            dest=dest,
            metavar=param.placeholder,
            type=_param_type(param),
            required=param.required,
            help=param.help,
        )


def _group_help(word: str, members: list[AnyCommand]) -> str:
    width = max(len(" ".join(c.words[1:])) for c in members)
    lines = [f"  {' '.join(c.words[1:]):<{width}}  {c.summary}" for c in members]
    return "\n".join(
        [
            "subcommands:",
            *lines,
            "",
            f"'{PROG} {word} SUBCOMMAND --help' shows one in full; see waihuctl(1).",
        ]
    )


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are JSON on stdout when ``json_errors``."""

    def __init__(self, *args: Any, json_errors: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.json_errors = json_errors

    def error(self, message: str) -> NoReturn:
        if self.json_errors:
            _fail(USAGE, f"{message} (see '{self.prog} --help')", as_json=True)
            sys.exit(EXIT_USAGE)
        super().error(message)


def waihu_version() -> str:
    """The installed waihu version, or ``unknown`` when run from a bare source tree."""
    try:
        return version("waihu")
    except PackageNotFoundError:
        return "unknown"


def build_parser(*, json_errors: bool = False) -> argparse.ArgumentParser:
    """The full argument parser, one subcommand per entry of the command tables.

    With ``json_errors``, usage errors are printed as JSON on stdout (``--json``).
    """
    parser = _Parser(
        prog=PROG,
        description="Drive a running waihud (the phone robot daemon) over its control socket, "
        "and check and try out scripts without one.",
        epilog="See waihuctl(1) for the protocol and examples.",
        json_errors=json_errors,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {waihu_version()}")
    _add_global_options(parser, after_command=False)
    parser.set_defaults(
        socket=os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET, timeout=DEFAULT_TIMEOUT
    )
    subcommands = parser.add_subparsers(
        dest="command",
        metavar="COMMAND",
        required=True,
        parser_class=functools.partial(_Parser, json_errors=json_errors),
    )
    for command in waihuctl_commands():
        sub = subcommands.add_parser(
            _spoken(command),
            help=command.summary,
            description=command.description or command.summary,
        )
        for param in command.params:
            _add_param(sub, param)
        if isinstance(command, Command) and command.waitable:
            sub.add_argument("--wait", action="store_true", help=WAIT_HELP)
        if talks_to_daemon(command):
            _add_global_options(sub, after_command=True)
    for word, members in groups().items():
        # no help=: the group is left out of the main listing, which shows its members
        group = subcommands.add_parser(
            word,
            usage=f"{PROG} {word} SUBCOMMAND ...",
            description=f"The {word} commands.",
            epilog=_group_help(word, members),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        group.add_argument(
            "subcommand",
            metavar="SUBCOMMAND",
            choices=[" ".join(c.words[1:]) for c in members],
            help="one of the subcommands below",
        )
    return parser


def _join_command_words(argv: Sequence[str]) -> list[str]:
    """Turn ``call show ID`` into ``["call show", "ID"]``, the subparser's name.

    argparse cannot have ``call TARGET`` and ``call show ID`` side by side, so
    the words of a multi-word command are joined before it parses.
    """
    words = list(argv)
    position = _command_position(words)
    for command in sorted(waihuctl_commands(), key=lambda c: -len(c.words)):
        count = len(command.words)
        if count > 1 and tuple(words[position : position + count]) == command.words:
            return [*words[:position], _spoken(command), *words[position + count :]]
    return words


def _command_position(words: Sequence[str]) -> int:
    """Where the command word is: after the global options given before it."""
    takes_value = {o.flag for o in GLOBAL_OPTIONS if o.metavar is not None}
    position = 0
    while position < len(words) and words[position].startswith("-"):
        position += 2 if words[position] in takes_value else 1
    return position


def did_you_mean(word: str, known: Sequence[str]) -> str:
    """``; did you mean 'status'?`` for the closest of ``known`` to ``word``, or ``""``."""
    close = difflib.get_close_matches(word, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _unknown_command(words: Sequence[str]) -> str | None:
    """What is wrong with the command words of ``words`` (joined already), or None.

    Says so for a first word that is no command, and for a second word that is
    none of its group's (``campaign strat``), listing the known ones and the closest.
    """
    position = _command_position(words)
    if position >= len(words):
        return None  # no command: argparse says so
    word = words[position]
    commands = waihuctl_commands()
    if word in {_spoken(c) for c in commands}:
        return None
    first_words = list(dict.fromkeys(c.words[0] for c in commands))
    if word not in first_words:
        return (
            f"unknown command {word!r}{did_you_mean(word, first_words)} "
            f"(commands: {', '.join(first_words)})"
        )
    members = groups().get(word)
    following = words[position + 1] if position + 1 < len(words) else None
    if not members or following is None or following.startswith("-"):
        return None  # a command of its own (call TARGET), or the group's help
    names = [" ".join(c.words[1:]) for c in members]
    if following in names:
        return None
    return (
        f"{word}: invalid choice: {following!r}{did_you_mean(following, names)} "
        f"({word} commands: {', '.join(names)})"
    )


def _missing_script_files(command: LocalCommand, params: Mapping[str, Any]) -> Iterator[str]:
    """For each script or cases file given that does not exist, a line naming the
    scripts beside it and the closest. The command still runs and reports the file
    its own way (``script validate`` goes on to the other files)."""
    if command.words[0] != "script":
        return
    for name in SCRIPT_FILE_PARAMS:
        value = params.get(name)
        for given in [value] if isinstance(value, str) else value or []:
            path = Path(given)
            if path.exists():
                continue
            folder = path.parent
            scripts = sorted(p.name for p in folder.glob(f"*{SCRIPT_SUFFIX}"))
            close = difflib.get_close_matches(path.name, scripts, n=1)
            hint = f"; did you mean {str(folder / close[0])!r}?" if close else ""
            there = f"{', '.join(scripts)}" if scripts else "none"
            yield f"{given}: no such file{hint} (scripts in {folder}/: {there})"


def _show(result: Any, command: Command, as_json: bool) -> None:
    if as_json:
        emit(json.dumps(result, ensure_ascii=False, indent=2), sys.stdout)
    else:
        emit(command.render(result), sys.stdout)


def _wait_for_end(client: ControlClient, call_id: str) -> Any:
    """Poll ``call.show`` until the call has ended, reporting on stderr how it goes.

    On a terminal one line is rewritten in place with the time so far
    (``dialling 1001 · ringing · 4 s``); otherwise each new state is a line
    (``call ID ringing``). The last line says how it ended, and why when it failed.
    """
    live = sys.stderr.isatty()
    started = time.monotonic()
    try:
        return _poll_until_ended(client, call_id, live=live, started=started)
    except KeyboardInterrupt:
        if live:
            sys.stderr.write(REWRITE_LINE)  # the next message starts on a clean line
        raise


def _poll_until_ended(client: ControlClient, call_id: str, *, live: bool, started: float) -> Any:
    seen = None
    while True:
        record = client.request("call.show", {"id": call_id})
        status = record.get("status")
        if status in ENDED:
            if live:
                sys.stderr.write(REWRITE_LINE)
            emit(_ending_line(record), sys.stderr)
            return record
        if live:
            line = REWRITE_LINE + _progress_line(record, time.monotonic() - started)
            encoding = sys.stderr.encoding or "ascii"
            # a terminal that cannot show '·' (or the number) still gets the line, escaped
            sys.stderr.write(line.encode(encoding, "backslashreplace").decode(encoding))
            sys.stderr.flush()
        elif status != seen:
            emit(f"{PROG}: call {call_id} {status}", sys.stderr)
        seen = status
        time.sleep(WAIT_POLL_SECONDS)


def _progress_line(record: Mapping[str, Any], elapsed: float) -> str:
    """``waihuctl: dialling 1001 · ringing · 4 s``, or ``… 1001 answered · 15 s``."""
    number, status = record.get("number"), record.get("status")
    if status == "answered":
        return f"{PROG}: {number} answered · {elapsed:.0f} s"
    steps = [f"dialling {number}", *(["ringing"] if status == "ringing" else [])]
    return f"{PROG}: {' · '.join(steps)} · {elapsed:.0f} s"


def _ending_line(record: Mapping[str, Any]) -> str:
    """``waihuctl: call ID ended``, or ``… failed (busy): 486 Busy Here``."""
    line = f"{PROG}: call {record.get('id')} {record.get('status')}"
    if record.get("status") == "failed":
        line += f" ({record.get('outcome')}): {record.get('error')}"
    return line


def call_exit_status(record: Mapping[str, Any]) -> int:
    """``call --wait``'s exit status for the ended call: 0 answered, EXIT_NOT_TAKEN when
    the callee did not take it, EXIT_NOT_PLACED when it could not be put through."""
    if record.get("status") == "ended":
        return 0
    return EXIT_NOT_TAKEN if record.get("outcome") in NOT_TAKEN else EXIT_NOT_PLACED


def _follow(client: ControlClient, result: Any, as_json: bool) -> int:
    """Print each pushed event as it comes; returns once the watched call (if any) has ended."""
    watched = result.get("call_id") if isinstance(result, dict) else None
    for message in client.events():
        if as_json:
            emit(json.dumps(message, ensure_ascii=False, separators=(",", ":")), sys.stdout)
        else:
            emit(render_event(message), sys.stdout)
        sys.stdout.flush()  # a live monitor: every line as it happens, into a pipe too
        if watched and message.get("call_id") == watched and message.get("event") in ENDED:
            return 0
    return 0  # events() ends only by raising NoReply


def _params(command: AnyCommand, args: argparse.Namespace) -> dict[str, Any]:
    params = {}
    for param in command.params:
        value = getattr(args, f"param_{param.name}")
        if value is None:  # not given: the default applies
            continue
        params[param.name] = dict(value) if param.type is dict else value
    return params


class _Link:
    """A local command's way to the daemon: connects at its first request."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.as_json: bool = args.json
        self._socket = args.socket
        self._timeout = args.timeout
        self._client: ControlClient | None = None

    def request(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        if self._client is None:
            self._client = ControlClient(self._socket, timeout=self._timeout)
        return self._client.request(method, params)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _run_local(command: LocalCommand, args: argparse.Namespace) -> int:
    params = {**{p.name: p.default for p in command.params}, **_params(command, args)}
    for line in _missing_script_files(command, params):
        emit(f"{PROG}: {line}", sys.stderr)
    if args.json and "as_json" in params:
        params["as_json"] = True  # the global --json, given before the command, counts too
    if not command.sends:
        return command.run(**params)
    link = _Link(args)
    try:
        return command.run(link, **params)
    finally:
        link.close()


def _run(args: argparse.Namespace) -> int:
    local = next((c for c in LOCAL_COMMANDS if _spoken(c) == args.command), None)
    if local is not None:
        return _run_local(local, args)
    command = next(c for c in COMMANDS if _spoken(c) == args.command)
    params = _params(command, args)
    with ControlClient(args.socket, timeout=args.timeout) as client:
        result = client.request(command.name, params)
        if command.streams:
            emit(f"{PROG}: {command.render(result)}", sys.stderr)
            return _follow(client, result, args.json)
        if command.waitable and args.wait:
            call_id = result["call_id"]
            try:
                result = _wait_for_end(client, call_id)
            except KeyboardInterrupt:
                emit(f"{PROG}: stopped waiting; call {call_id} goes on", sys.stderr)
                return EXIT_INTERRUPTED
            _show(result, COMMANDS_BY_NAME["call.show"], args.json)
            return call_exit_status(result)
    _show(result, command, args.json)
    return 0


def _fail(code: str, message: str, as_json: bool) -> int:
    """Report a failure: on stderr, or with --json as a JSON error on stdout."""
    if as_json:
        error = {"ok": False, "error": {"code": code, "message": message}}
        emit(json.dumps(error, ensure_ascii=False), sys.stdout)
    else:
        emit(f"{PROG}: {message}", sys.stderr)
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """The ``waihuctl`` console script; returns the exit status."""
    given = list(sys.argv[1:] if argv is None else argv)
    as_json = JSON_FLAG in given  # before parsing: a usage error is reported as JSON too
    parser = build_parser(json_errors=as_json)
    words = _join_command_words(given)
    unknown = _unknown_command(words)
    if unknown is not None:
        parser.error(unknown)
    args = parser.parse_args(words)
    args.json = args.json or as_json  # a local command's own --json counts for its errors
    try:
        return _run(args)
    except ConnectFailed as exc:
        return _fail(UNREACHABLE, str(exc), args.json)
    except NoReply as exc:
        return _fail(NO_REPLY, str(exc), args.json)
    except ControlError as exc:
        return _fail(exc.code, exc.message, args.json)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader (`| head`) has gone: stop quietly, and keep the interpreter's
        # final flush of stdout from failing again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
