"""Writes the man page waihuctl(1) from the command tables: ``python -m waihu.control.manpage``.

The page in ``man/waihuctl.1`` is this module's output, committed; a test
checks that it matches the tables (``protocol.COMMANDS`` and
``local.LOCAL_COMMANDS``), so a new command or param cannot leave the page
behind. Regenerate with::

    python -m waihu.control.manpage > man/waihuctl.1

What it is not: the hand-written pages (waihud(8), waihud.toml(5)), or help
text at run time (argparse builds that from the same table).
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

from waihu.control.client import GLOBAL_OPTIONS, PROG, GlobalOption
from waihu.control.local import LOCAL_COMMANDS, LocalCommand
from waihu.control.protocol import (
    COMMANDS,
    DEFAULT_SOCKET,
    DROPPED_EVENT,
    ERROR_CODES,
    MAX_LINE_BYTES,
    SOCKET_ENV,
    WAIT_HELP,
    Command,
    Param,
)

__all__ = ["manpage"]

_JSON_TYPES = {
    str: "string",
    int: "integer",
    bool: "boolean",
    dict: "object of strings",
    list: "array of strings",
}

EXAMPLES = (
    ("Is the daemon up, and what is it doing?", "waihuctl status"),
    (
        "Call one number with the demo script, filling {name}, and show the call when it ends:",
        "waihuctl call 01012345678 \\-\\-script demo\\-ko \\-\\-var name=Kim \\-\\-wait",
    ),
    ("The last five calls:", "waihuctl calls \\-\\-limit 5"),
    ("Follow every call live, as it happens:", "waihuctl watch"),
    (
        "Only the failed calls, as JSON lines, for jq:",
        'waihuctl watch \\-\\-json | jq \\-c \\(aqselect(.event == "failed")\\(aq',
    ),
    (
        "Check a new script, then talk to it by typing (an empty line is silence):",
        "waihuctl script validate new.toml\nwaihuctl script chat new.toml",
    ),
    (
        "One call's transcript as JSON, for jq:",
        "waihuctl \\-\\-json call show 20261125\\-150001\\-a1b2c3 | jq .turns",
    ),
    (
        "The protocol by hand:",
        'echo \\(aq{"id": 1, "method": "status"}\\(aq |\n'
        "    socat \\- UNIX\\-CONNECT:/run/waihu/control.sock",
    ),
)


def _text(text: str) -> str:
    """Plain text as roff: backslashes escaped, no line taken for a request."""
    text = text.replace("\\", "\\e")
    lines = text.split("\n")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in lines)


def _flag(flag: str) -> str:
    return "\\fB" + flag.replace("-", "\\-") + "\\fR"


def _word(word: str) -> str:
    return "\\fI" + _text(word) + "\\fR"


def _param_spelling(param: Param) -> str:
    if param.positional:
        return _word(param.placeholder)
    if param.type is bool:
        return _flag(param.option)
    return f"{_flag(param.option)} {_word(param.placeholder)}"


def _param_usage(param: Param) -> str:
    used = _param_spelling(param)
    if param.positional and param.type is list:
        return used + "..."
    if param.required or param.positional:
        return used
    return f"[{used}]..." if param.type is dict else f"[{used}]"


def _command_usage(command: Command | LocalCommand) -> str:
    parts = [_flag(" ".join(command.words)), *(_param_usage(p) for p in command.params)]
    if isinstance(command, Command) and command.waitable:
        parts.append(f"[{_flag('--wait')}]")
    return " ".join(parts)


def _option(option: GlobalOption) -> list[str]:
    head = _flag(option.flag)
    if option.metavar:
        head += " " + _word(option.metavar)
    return [".TP", head, _text(option.help)]


def _param_doc(param: Param, *, wire: bool = True) -> list[str]:
    head = _param_spelling(param)
    if not wire:
        return [".TP", head, _text(param.help)]
    spec = f"(param {param.name}: {_JSON_TYPES[param.type]}"
    spec += ", required)" if param.required else ")"
    return [".TP", head, _text(f"{param.help} {spec}")]


def _command(command: Command) -> list[str]:
    lines = [".TP", _command_usage(command), _text(command.description or command.summary)]
    method = f"Protocol method {_flag(command.name)}"
    if command.streams:
        method += "; after its reply the daemon pushes events (see \\fBPROTOCOL\\fR)"
    lines += [".RS", method + ".", ".RE"]
    docs = [line for p in command.params for line in _param_doc(p)]
    if command.waitable:
        docs += [".TP", _flag("--wait"), _text(WAIT_HELP[0].upper() + WAIT_HELP[1:] + ".")]
    if docs:
        lines += [".RS", *docs, ".RE"]
    return lines


def _local_command(command: LocalCommand) -> list[str]:
    lines = [".TP", _command_usage(command), _text(command.description or command.summary)]
    docs = [line for p in command.params if not p.positional for line in _param_doc(p, wire=False)]
    if docs:
        lines += [".RS", *docs, ".RE"]
    return lines


def manpage() -> str:
    """The whole roff source of waihuctl(1)."""
    try:
        release = version("waihu")
    except PackageNotFoundError:
        release = "unknown"
    global_usage = " ".join(
        f"[{_flag(o.flag)}{' ' + _word(o.metavar) if o.metavar else ''}]" for o in GLOBAL_OPTIONS
    )
    out = [
        '.\\" Generated by "python -m waihu.control.manpage" from the command tables in',
        '.\\" waihu/control/protocol.py and local.py. Do not edit; regenerate.',
        f'.TH WAIHUCTL 1 "" "waihu {release}" "waihu manual"',
        ".SH NAME",
        f"{PROG} \\- drive a running waihud over its control socket",
        ".SH SYNOPSIS",
        f".B {PROG}",
        f"{global_usage} {_word('COMMAND')} [{_word('ARGS')}]",
        ".SH DESCRIPTION",
        f".B {PROG}",
        "is the operator's interface to",
        ".BR waihud (8):",
        "it places calls, lists and shows their results with transcripts, follows calls",
        "live, and reports and stops the daemon. It sends one request per command over the",
        "daemon's unix control socket and prints the result as text, or as JSON with",
        _flag("--json") + ".",
        "Korean and Chinese text is printed as is (UTF\\-8).",
        "It also checks script files and lets you talk to a script by typing, on any",
        "machine, without a daemon (see",
        '.BR "LOCAL COMMANDS" ).',
        ".SH OPTIONS",
        "Given before the command, or after a command that talks to the daemon.",
    ]
    for option in GLOBAL_OPTIONS:
        out += _option(option)
    out += [".SH COMMANDS"]
    for command in COMMANDS:
        out += _command(command)
    out += [
        ".SH LOCAL COMMANDS",
        "These work on files on this machine and never connect to",
        ".BR waihud ;",
        "the global options do not apply to them.",
    ]
    for local in LOCAL_COMMANDS:
        out += _local_command(local)
    codes = ", ".join(f"\\fB{code}\\fR" for code in ERROR_CODES)
    out += [
        ".SH PROTOCOL",
        "The socket speaks JSON lines: each message is one line of UTF\\-8 JSON,",
        f"at most {MAX_LINE_BYTES} bytes. A request is",
        ".RS",
        '\\fB{"id": 1, "method": "call.show", "params": {"id": "..."}}\\fR',
        ".RE",
        "and its reply",
        ".RS",
        '\\fB{"id": 1, "ok": true, "result": {...}}\\fR',
        ".RE",
        "or",
        ".RS",
        '\\fB{"id": 1, "ok": false, "error": {"code": "not_found", "message": "..."}}\\fR',
        ".RE",
        f"where the code is one of {codes}.",
        "Replies come in request order. Each command above names its method and params.",
        ".PP",
        "After its reply to",
        ".BR watch ,",
        "the daemon pushes one line per call event until the client disconnects:",
        ".RS",
        '\\fB{"event": "ringing", "call_id": "...", "at": 1795000001.25, "status": 180, '
        '"reason": "Ringing"}\\fR',
        ".RE",
        "with an",
        ".B event",
        "key (the kind: dialing, ringing, answered, turn, utterance, barge_in, node,",
        "hangup, ended or failed) and no",
        ".BR id ;",
        "the time",
        ".B at",
        "is in seconds since the epoch, and the event's own fields follow. A client too",
        "slow to read loses events rather than slowing calls down; where they were lost",
        f"comes one {_flag(DROPPED_EVENT)} event with their {_flag('count')}.",
        ".SH ENVIRONMENT",
        ".TP",
        f".B {SOCKET_ENV}",
        f"The control socket to use when {_flag('--socket')} is not given.",
        ".SH FILES",
        ".TP",
        f".I {DEFAULT_SOCKET}",
        "The daemon's control socket, mode 0660: members of the daemon's group may use it.",
        ".SH EXIT STATUS",
        "0 on success; 1 when the daemon cannot be reached or answers with an error",
        "(the message is printed on standard error), or when a script has a problem;",
        "2 for a usage error;",
        f"130 when interrupted (a {_flag('--wait')} interrupted leaves the call running;",
        f"{_flag('watch')} runs until interrupted, or with {_flag('--call')} until the call",
        "has ended, then exits 0).",
        ".SH EXAMPLES",
    ]
    for caption, example in EXAMPLES:
        out += [".PP", _text(caption), ".PP", ".RS", ".nf", example, ".fi", ".RE"]
    out += [
        ".SH SEE ALSO",
        ".BR waihud (8),",
        ".BR waihud.toml (5),",
        ".BR waihu\\-script (5)",
    ]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(manpage())
