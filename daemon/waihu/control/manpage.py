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
from collections.abc import Mapping

from waihu.api import EVENT_KINDS
from waihu.control.client import (
    EXIT_NOT_PLACED,
    EXIT_NOT_TAKEN,
    GLOBAL_OPTIONS,
    NO_REPLY,
    PROG,
    UNREACHABLE,
    USAGE,
    GlobalOption,
    waihu_version,
    waihuctl_commands,
)
from waihu.control.local import LOCAL_COMMANDS, LocalCommand
from waihu.control.protocol import (
    COMMANDS,
    DEFAULT_SOCKET,
    DROPPED_EVENT,
    ERROR_MEANINGS,
    MAX_LINE_BYTES,
    MIN_CALL_ID_PREFIX,
    SOCKET_ENV,
    WAIT_HELP,
    Command,
    Param,
)

__all__ = ["manpage"]

_JSON_TYPES: dict[type, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object of strings",
    Mapping: "object",
}
_JSON_ITEMS: dict[type, str] = {str: "array of strings", Mapping: "array of objects"}

EXAMPLES = (
    ("Is the daemon up, and what is it doing?", "waihuctl status"),
    (
        "Call one number with the demo script, filling {name}, and show the call when it ends:",
        "waihuctl call 01012345678 \\-\\-script demo\\-ko \\-\\-var name=Kim \\-\\-wait",
    ),
    ("The last five calls:", "waihuctl calls \\-\\-limit 5"),
    (
        "A campaign from its file, its contacts from a spreadsheet saved by Excel, then go:",
        "waihuctl campaign create \\-\\-file spring.toml\n"
        "waihuctl campaign import spring contacts.csv\n"
        "waihuctl campaign start spring",
    ),
    (
        "How it goes, and which line of the script loses people (the funnel):",
        "waihuctl campaign list\nwaihuctl campaign show spring",
    ),
    (
        "Follow one campaign's calls live; then its A-grade calls of today:",
        "waihuctl watch \\-\\-campaign spring\n"
        "waihuctl calls \\-\\-campaign spring \\-\\-grade A \\-\\-since $(date +%F)",
    ),
    (
        "Call the busy and unanswered contacts again, and write the results for Excel:",
        "waihuctl campaign redial spring \\-\\-outcome busy \\-\\-outcome no_answer\n"
        "waihuctl campaign export spring results.xlsx",
    ),
    (
        "See what deleting recordings older than 90 days would free, then do it:",
        "waihuctl recordings prune 90\nwaihuctl recordings prune 90 \\-\\-apply",
    ),
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
        "Copy a call's recording here, naming the call by the start of its id; or play it:",
        "waihuctl call fetch 20261125\\-1500 \\-o greeting.wav\nwaihuctl call play 20261125\\-1500",
    ),
    (
        "Bash completion for yourself:",
        "waihuctl completion bash > ~/.local/share/bash\\-completion/completions/waihuctl",
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
    repeated = param.type in (dict, list)  # an option given once per value
    if param.required or param.positional:
        return used + "..." if repeated else used
    return f"[{used}]..." if repeated else f"[{used}]"


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


def _json_type(param: Param) -> str:
    return _JSON_ITEMS[param.items] if param.type is list else _JSON_TYPES[param.type]


def _wire_spec(param: Param) -> str:
    """``(param name: string, required)``: how the protocol carries it."""
    return f"(param {param.name}: {_json_type(param)}" + (", required)" if param.required else ")")


def _param_doc(param: Param, *, wire: bool = True) -> list[str]:
    head = _param_spelling(param)
    if not wire:
        return [".TP", head, _text(param.help)]
    return [".TP", head, _text(f"{param.help} {_wire_spec(param)}")]


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
    return lines + _result_doc(command)


def _result_doc(command: Command) -> list[str]:
    """The keys of a command's ``--json`` result and an example of its text, when given."""
    lines: list[str] = []
    if command.result_keys:
        lines += [
            ".RS",
            f"With {_flag('--json')}, an object with these keys (times are seconds since the "
            "epoch):",
        ]
        for key, meaning in command.result_keys:
            lines += [".TP", _flag(key), _text(meaning)]
        lines += [".RE"]
    if command.example:
        lines += [".RS", ".PP", "For example:", ".PP", ".nf", _text(command.example), ".fi", ".RE"]
    return lines


def _local_command(command: LocalCommand) -> list[str]:
    lines = [".TP", _command_usage(command), _text(command.description or command.summary)]
    if command.sends:
        methods = ", ".join(_flag(m) for m in command.sends)
        lines += [".RS", f"Sends protocol method(s) {methods}.", ".RE"]
    docs = [line for p in command.params if not p.positional for line in _param_doc(p, wire=False)]
    if docs:
        lines += [".RS", *docs, ".RE"]
    return lines


def _unspelled_methods() -> list[str]:
    """The methods waihuctl sends only from its own steps, with their params."""
    spelled = {c.name for c in waihuctl_commands() if isinstance(c, Command)}
    lines: list[str] = []
    for command in COMMANDS:
        if command.name in spelled:
            continue
        lines += [".TP", _flag(command.name), _text(command.description or command.summary)]
        params = [
            f"{_flag(p.name)} ({_json_type(p)}{', required' if p.required else ''})"
            for p in command.params
        ]
        if params:
            lines += [".RS", "Params: " + "; ".join(params) + ".", ".RE"]
    return lines


def _events() -> list[str]:
    """One entry per event kind of ``waihu.api.EVENT_KINDS``, with its fields."""
    lines: list[str] = []
    for kind, fields in EVENT_KINDS.items():
        lines += [".TP", _flag(kind), ", ".join(fields) if fields else "(no fields)"]
    return lines


def _code(code: str, meaning: str) -> list[str]:
    return [".TP", _flag(code), _text(meaning)]


def manpage() -> str:
    """The whole roff source of waihuctl(1)."""
    release = waihu_version()
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
        "live, runs campaigns (creates them, imports their contacts from CSV or Excel files,",
        "starts, pauses and stops them, shows their progress and funnel, exports their",
        "results), keeps the do\\-not\\-call list, prunes recordings, shows the audit log of",
        "operator actions, and reports and stops the daemon. It sends requests over the",
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
    out += [
        ".TP",
        f".B {_flag('--version')}",
        f"Print {PROG}'s version and exit.",
        ".SS Call ids",
        "Wherever a command takes a call id",
        f"({_flag('call show')}, {_flag('call fetch')}, {_flag('call play')},",
        f"{_flag('watch --call')}),",
        f"its first {MIN_CALL_ID_PREFIX} or more characters will do, as long as no other",
        "call's id, live or filed, starts with them (as git takes short hashes). Ids start",
        "with the call's date and time",
        r"(\fB20261125\-150001\-a1b2c3\fR),",
        r"so \fB20261125\-1500\fR names the one call placed at 15:00 that day.",
        "A prefix that several calls share is refused with",
        ".B bad_request",
        "listing some of them; one that none does with",
        ".BR not_found .",
        ".SS Recordings",
        "Recordings are stereo WAV files: the callee on the left channel, the robot on the",
        "right. The daemon writes them mode 0640 in folders of mode 0750, so members of its",
        "group can read them where they are;",
        ".B call fetch",
        "and",
        ".B call play",
        "reach them over the control socket from any account that may use it.",
        ".SS Shell completion",
        f".B {PROG} completion bash",
        "prints a bash completion script: save it as",
        r".I /usr/share/bash\-completion/completions/waihuctl",
        "(or, for yourself,",
        r".IR ~/.local/share/bash\-completion/completions/waihuctl ).",
        f".B {PROG} completion zsh",
        "prints one for zsh: save it as",
        ".I _waihuctl",
        "in a directory of",
        ".BR $fpath ,",
        "such as",
        r".IR /usr/local/share/zsh/site\-functions .",
        ".SS Unknown names",
        "An unknown command, or a campaign or script file that does not exist, is",
        "reported with the known ones and, when one is close, which was probably meant",
        r"(\fBunknown command \(aqstauts\(aq; did you mean \(aqstatus\(aq?\fR).",
    ]
    out += [
        ".SH COMMANDS",
        "Commands that change the daemon's state (calls, campaigns, the do\\-not\\-call list,",
        "recordings, shutdown) are refused with",
        ".B forbidden",
        "to users outside",
        ".B daemon.control_admin_group",
        "when it is set. Commands that read or write a file do that here, on the machine",
        "running",
        f".BR {PROG} ,",
        "and send the daemon what it needs.",
    ]
    for entry in waihuctl_commands():
        if isinstance(entry, Command):
            out += _command(entry)
        elif entry.sends:
            out += _local_command(entry)
    out += [
        ".SH LOCAL COMMANDS",
        "These work on files on this machine and never connect to",
        ".BR waihud ;",
        "the global options do not apply to them.",
    ]
    for local in LOCAL_COMMANDS:
        if not local.sends:
            out += _local_command(local)
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
        "where the code is one of:",
        *[line for code, meaning in ERROR_MEANINGS.items() for line in _code(code, meaning)],
        ".PP",
        "Replies come in request order. Each command above names its method and params;",
        f"these methods {PROG} sends from its own steps only:",
        *_unspelled_methods(),
        ".PP",
        "After its reply to",
        ".BR watch ,",
        "the daemon pushes one line per call event until the client disconnects:",
        ".RS",
        '\\fB{"event": "ringing", "call_id": "...", "at": 1795000001.25, "campaign": null, '
        '"status": 180, "reason": "Ringing"}\\fR',
        ".RE",
        "with an",
        ".B event",
        "key (the kind) and no",
        ".BR id ;",
        "the time",
        ".B at",
        "is in seconds since the epoch,",
        ".B campaign",
        "is the id of the campaign the call belongs to (or null), and the event's own",
        "fields follow. With",
        f"{_flag('--campaign')},",
        ".B watch",
        "pushes only that campaign's events. The kinds and their fields:",
        *_events(),
        ".PP",
        "A client too slow to read loses events rather than slowing calls down; where",
        f"they were lost comes one {_flag(DROPPED_EVENT)} event with their {_flag('count')}.",
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
        "(the message is printed on standard error), when a file cannot be read or",
        "written, or when a script has a problem;",
        "2 for a usage error;",
        f"130 when interrupted (a {_flag('--wait')} interrupted leaves the call running;",
        f"{_flag('watch')} runs until interrupted, or with {_flag('--call')} until the call",
        "has ended, then exits 0).",
        "A",
        ".B campaign import",
        "that read its file exits 0 even when rows were rejected: they are listed and",
        "written to the rejects file.",
        f"{_flag('call --wait')} exits by how the call ended: 0 when it was answered;",
        f"{EXIT_NOT_TAKEN} when the callee did not take it (busy, no answer, declined);",
        f"{EXIT_NOT_PLACED} when it could not be put through (an invalid number, a trunk",
        "fault, cut off by a shutdown); the reason is printed on standard error and is",
        f"the call's {_flag('error')}.",
        "A target the trunk cannot dial is refused before any call is filed: exit 1.",
        f"With {_flag('--json')} anywhere on the command line, a failure is printed on",
        "standard output instead, as",
        '\\fB{"ok": false, "error": {"code": ..., "message": ...}}\\fR',
        "with the daemon's code (see",
        ".BR PROTOCOL ),",
        "or",
        f"\\fB{UNREACHABLE}\\fR",
        "when the socket cannot be reached,",
        f"\\fB{NO_REPLY}\\fR",
        "when no reply came, or",
        f"\\fB{USAGE}\\fR",
        "for a usage error (exit status 2).",
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
