r"""The control socket's protocol: JSON lines, and the one table of commands.

waihud listens on a unix stream socket (``/run/waihu/control.sock`` by
default, mode 0660, so the ``waihu`` group may drive it). Every message is one
line of UTF-8 JSON ending in ``\n``, at most ``MAX_LINE_BYTES`` long; never
pickle, so any language (or ``socat``) can speak it. A client sends requests
and gets one reply per request, in order; it may send the next request before
the last reply has come.

Request — ``id`` (a string, an integer or null) is echoed in the reply;
``params`` may be left out when a method takes none::

    {"id": 1, "method": "call", "params": {"target": "1001", "script": "demo"}}

Reply, success::

    {"id": 1, "ok": true, "result": {"call_id": "20261125-150001-a1b2c3"}}

Reply, failure — ``code`` is one of a fixed set, ``message`` is for people::

    {"id": 1, "ok": false, "error": {"code": "not_found",
                                     "message": "no script named 'demo'"}}

Error codes:

- ``parse_error``: the line is not UTF-8 JSON, or longer than ``MAX_LINE_BYTES``
  (the reply's ``id`` is then null);
- ``bad_request``: valid JSON but not a request — not an object, ``method``
  not a string, an unknown or missing param, a param of the wrong type; a call
  id prefix shorter than ``MIN_CALL_ID_PREFIX`` or that several calls' ids start with
  (the message lists some of them);
- ``unknown_method``: no such method;
- ``not_found``: the thing named (call, script, trunk, campaign) does not exist;
  no call's id starts with the call id prefix given; the call has no recording;
- ``unavailable``: the daemon cannot do it now (draining, at ``max_calls``, a
  storage that keeps no campaigns);
- ``forbidden``: the command changes the daemon's state and the client is not
  in ``daemon.control_admin_group`` (read-only commands are still served);
- ``internal``: a bug in waihud; the daemon logged it with a traceback.

Params are JSON values of the types each command's table entry gives:
strings, integers, numbers, booleans, objects of strings (``variables``),
arrays of strings (``numbers``), any object (``settings``, a campaign's
settings table as a campaign file holds it) or arrays of objects
(``contacts``).

Pushed events: after its reply to ``watch`` the server keeps the connection
open and pushes one line per event until the client disconnects (the
connection still answers requests meanwhile). An event line has an ``event``
key — the kind — and no ``id``/``ok``, so a client waiting for a reply skips
it. ``call_id``, ``at`` (seconds since the epoch) and ``campaign`` (the
campaign the call belongs to, or null) follow, then the event's own fields.
The kinds and their fields are ``waihu.api.EVENT_KINDS``:

- ``dialing``: ``number``, ``script``, ``trunk`` — the call is filed; the INVITE goes next;
- ``ringing``: ``status``, ``reason`` — a provisional answer (180, 183);
- ``answered``: ``codec`` — 200 OK, media flows;
- ``turn``: ``speaker``, ``text``, ``node``, ``intent`` — one transcript line;
- ``node``: ``node`` — the script moved to a node;
- ``utterance``: ``text``, ``confidence`` — what the recogniser heard;
- ``barge_in``: no fields — the callee cut into a prompt;
- ``hangup``: ``by`` — ``robot`` or ``callee``;
- ``ended``, ``failed``: ``outcome``, ``grade``, ``tags``, ``sip_status``,
  ``hangup_by``, ``error`` — the last event of every call: answered calls end,
  others fail;
- ``campaign``: ``state``, ``reason`` — a campaign changed state (``call_id``
  is null);
- ``transfer``: ``target``, ``mode``, ``outcome``, ``status``, ``detail`` — the
  script's transfer to a person settled (``transferred``, ``agent_busy``,
  ``no_answer``, ``failed``);
- ``screened``: ``answered_by``, ``evidence``, ``outcome`` — who answered
  (``person``, ``announcement``, ``voicemail``, ``unsure``), why, and the
  outcome a machine files instead of ``answered`` (null for a person).

``watch`` with ``campaign`` pushes only the events whose ``campaign`` is that
campaign's id: its calls' events and its own state changes.

For example::

    {"event": "ringing", "call_id": "20261125-150001-a1b2c3", "at": 1795000001.25,
     "campaign": null, "status": 180, "reason": "Ringing"}
    {"event": "failed", "call_id": "20261125-150001-a1b2c3", "at": 1795000002.5,
     "campaign": null, "outcome": "busy", "grade": null, "tags": [], "sip_status": 486,
     "hangup_by": null, "error": null}

A watcher that reads too slowly loses events rather than slowing the calls
down; where the gap was, the stream says how many were lost and when the
first of them happened (``call_id`` is the watched call, or null)::

    {"event": "dropped", "call_id": null, "at": 1795000003.0, "count": 17}

By hand::

    $ echo '{"id": 1, "method": "status"}' | socat - UNIX-CONNECT:/run/waihu/control.sock
    {"id":1,"ok":true,"result":{"version":"0.1.0","uptime":12.5,"draining":false,...}}

End of input counts as disconnecting, so a watch by hand keeps its input open::

    $ (echo '{"id": 1, "method": "watch"}'; cat) | socat - UNIX-CONNECT:/run/waihu/control.sock

The methods are the ``COMMANDS`` table below. It drives the server's dispatch
and param checks, ``waihuctl``'s subcommands and ``--help``, and the man page
waihuctl(1) (``python -m waihu.control.manpage``): a new method is one entry
here, naming its handler, plus that method of ``handlers.ControlHandlers``.
(Commands waihuctl runs itself, without the daemon, are the sibling table in
``local``.)

What it is not: the socket server (``server``), the client (``client``), or
the daemon's answers (``handlers``).
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

from waihu.api import OUTCOMES, CallEvent, WaihuError
from waihu.control.render import (
    render_audit,
    render_call,
    render_call_placed,
    render_calls,
    render_campaign,
    render_campaign_created,
    render_campaign_summary,
    render_campaigns,
    render_contacts_moved,
    render_dnc_added,
    render_dnc_list,
    render_dnc_removed,
    render_plugins,
    render_pruned,
    render_shutdown,
    render_status,
    render_trunks,
    render_value,
    render_watching,
)

__all__ = [
    "ATTEMPTS_PAGE",
    "AUDIT_LIMIT",
    "CALL_ID_PARAM",
    "CAMPAIGN_PARAM",
    "COMMANDS",
    "COMMANDS_BY_NAME",
    "DEFAULT_SOCKET",
    "DNC_REASON",
    "DROPPED_EVENT",
    "ENDED_EVENTS",
    "ERROR_CODES",
    "ERROR_MEANINGS",
    "MAX_LINE_BYTES",
    "MIN_CALL_ID_PREFIX",
    "NUMBERS_PARAM",
    "RECORDING_CHUNK_BYTES",
    "SOCKET_ENV",
    "VARIABLES_PARAM",
    "WAIT_HELP",
    "Command",
    "CommandEntry",
    "ControlError",
    "ErrorCode",
    "Param",
    "RequestId",
    "call_event_message",
    "decode_line",
    "dropped_message",
    "encode_error",
    "encode_event",
    "encode_request",
    "encode_result",
    "parse_reply",
    "parse_request",
    "request_id",
]

DEFAULT_SOCKET = "/run/waihu/control.sock"  # systemd's RuntimeDirectory=waihu
SOCKET_ENV = "WAIHU_SOCKET"  # overrides DEFAULT_SOCKET for waihuctl
MAX_LINE_BYTES = 1 << 20  # 1 MiB: far above any request, low enough to bound a bad client
# A call id may be shortened to a unique prefix of at least this many characters, as git
# takes short hashes; fewer would match most of a day's calls (ids start with the date)
MIN_CALL_ID_PREFIX = 4
# bytes of a recording per call.recording reply: base64 makes it 4/3 as long, still well
# under MAX_LINE_BYTES with the reply around it
RECORDING_CHUNK_BYTES = 512 * 1024

ErrorCode = Literal[
    "parse_error",
    "bad_request",
    "unknown_method",
    "not_found",
    "unavailable",
    "forbidden",
    "internal",
]
ERROR_CODES: tuple[str, ...] = typing.get_args(ErrorCode)
# what each code means, for the man page (the module docstring says the same at length)
ERROR_MEANINGS: Mapping[str, str] = {
    "parse_error": "the line is not UTF-8 JSON, or is too long",
    "bad_request": "not a request, an unknown or missing param, a param of the wrong type, "
    "or a request the daemon refuses as wrong (bad campaign settings, a state change "
    "that does not apply, a call id prefix that more than one call's id starts with)",
    "unknown_method": "no such method",
    "not_found": "the call, script, trunk or campaign named does not exist (or the call "
    "has no recording)",
    "unavailable": "the daemon cannot do it now (draining, at max_calls, a storage "
    "without campaigns)",
    "forbidden": "the command changes state and the client is not in daemon.control_admin_group",
    "internal": "a bug in waihud, logged with a traceback",
}

RequestId = str | int | None

CALL_LIMIT_MAX = 1000  # rows one `calls` request may ask for
ATTEMPTS_PAGE = 1000  # attempts per page of an export: a few hundred kB a reply
ATTEMPTS_PAGE_MAX = 5000  # well under MAX_LINE_BYTES' worth of rows the client reads
AUDIT_LIMIT = 50  # audit entries shown unless asked for more
AUDIT_LIMIT_MAX = 10000
DROPPED_EVENT = "dropped"  # pushed in place of events a slow watcher lost
ENDED_EVENTS = ("ended", "failed")  # the last event of every call
_EVENT_HEAD = ("event", "call_id", "at", "campaign")  # keys every pushed event starts with


class ControlError(WaihuError):
    """An expected failure of a control request, with one of the fixed ``ERROR_CODES``.

    Handlers raise it (``ControlError("not_found", "no call with id 'x'")``);
    the server sends it as the reply's ``error``; the client raises it again
    from an error reply.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown control error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    def to_json(self) -> dict[str, str]:
        """The ``error`` object of a reply."""
        return {"code": self.code, "message": self.message}


def _bad(message: str) -> ControlError:
    return ControlError("bad_request", message)


# ───────────────────────── the command table ─────────────────────────

# a param's type → how messages name it; ``Mapping`` is any JSON object, ``dict`` an
# object whose values are strings
_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    dict: "an object of strings",
    Mapping: "an object",
    list: "an array",
}
_ITEM_NAMES: dict[type, str] = {str: "strings", Mapping: "objects"}  # what a list holds


@attrs.frozen(kw_only=True)
class Param:
    """One named parameter of a method, and how ``waihuctl`` spells it.

    ``type`` is ``str``, ``int``, ``float`` (any number), ``bool``, ``dict``
    (an object whose values are strings), ``Mapping`` (any object) or
    ``list`` (of ``items``: strings, or objects with ``items=Mapping``). On
    the command line a ``positional`` param is a bare word (``waihuctl call
    show ID``), others are options (``--script NAME``); a ``dict`` param is a
    repeatable ``--flag KEY=VALUE``; a positional ``list`` takes one or more
    words, an option ``list`` is repeated (``--outcome busy --outcome
    no_answer``); a ``bool`` is a switch that sets the opposite of its
    ``default`` (``--apply`` sets ``dry_run`` false). ``Mapping`` params and
    lists of objects cannot be typed: a local step of waihuctl builds them.
    """

    name: str
    type: type = attrs.field(validator=attrs.validators.in_(_TYPE_NAMES))
    help: str
    required: bool = False
    default: Any = None
    positional: bool = False
    flag: str | None = None  # option spelling when not --name
    metavar: str | None = None
    minimum: int | None = None
    maximum: int | None = None
    items: type = attrs.field(default=str, validator=attrs.validators.in_(_ITEM_NAMES))

    @property
    def option(self) -> str:
        """The command-line option (``--script``), for non-positional params."""
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def placeholder(self) -> str:
        """The word standing for the value in usage lines and help (``NAME``, ``KEY=VALUE``)."""
        if self.metavar:
            return self.metavar
        return "KEY=VALUE" if self.type is dict else self.name.upper()

    @property
    def kind(self) -> str:
        """The JSON type the param takes, as messages name it (``an array of strings``)."""
        if self.type is list:
            return f"an array of {_ITEM_NAMES[self.items]}"
        return _TYPE_NAMES[self.type]

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` for this param ("must be an integer, not a
        string"), or None when it is of this param's type and range."""
        wrong = f"must be {self.kind}, not {_json_type(value)}"
        # bool is an int in Python; JSON keeps them apart, and so do we
        if isinstance(value, bool) != (self.type is bool):
            return wrong
        wanted = (int, float) if self.type is float else self.type  # 3 is a number too
        if not isinstance(value, wanted):
            return wrong
        if self.type is dict and not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            return wrong
        if self.type is list and not all(isinstance(v, self.items) for v in value):
            return wrong
        if self.type in (str, list) and self.required and not _filled(value):
            return "must not be empty"
        if self.minimum is not None and value < self.minimum:
            return f"must be at least {self.minimum}, not {value}"
        if self.maximum is not None and value > self.maximum:
            return f"must be at most {self.maximum}, not {value}"
        return None

    def check(self, value: Any) -> Any:
        """``value`` if it is fit for this param, else ControlError bad_request naming it."""
        problem = self.problem(value)
        if problem is not None:
            raise _bad(f"param {self.name!r} {problem}")
        return value


def _filled(value: str | list[Any]) -> bool:
    return bool(value.strip()) if isinstance(value, str) else bool(value)


@attrs.frozen(kw_only=True)
class CommandEntry:
    """What every entry of waihuctl's command tables has, whether the daemon runs it
    (``Command``) or waihuctl itself (``local.LocalCommand``): its name, its help and its
    params, from which waihuctl's subcommands, ``--help`` and the man page are built.
    """

    name: str
    summary: str  # one line, for --help listings
    description: str = ""  # a paragraph, for the command's --help and the man page
    params: tuple[Param, ...] = ()

    @property
    def words(self) -> tuple[str, ...]:
        """The command as waihuctl spells it, word by word."""
        return tuple(self.name.split("."))


@attrs.frozen(kw_only=True)
class Command(CommandEntry):
    """One control method: its params, its help, its handler, and how waihuctl shows its result.

    The daemon answers it with the async method named ``handler`` of
    ``handlers.ControlHandlers``, called with every param as a keyword
    argument (absent optional ones get their ``default``). ``waihuctl``
    spells it as its dot-separated ``words`` (``call show``).
    """

    handler: str  # the ControlHandlers method answering it
    render: Callable[[Any], str]
    waitable: bool = False  # the result names a call: waihuctl --wait follows it to its end
    # admins only when daemon.control_admin_group is set; logged at info with the client
    changes_state: bool = False
    streams: bool = False  # after the reply, events are pushed until the client disconnects
    # False: waihuctl has no subcommand of its own for it; a local step sends it
    # (its params cannot be typed: contacts, pages of an export)
    spelled: bool = True
    # the result's keys and what each holds, for the man page: (key, meaning)
    result_keys: tuple[tuple[str, str], ...] = ()
    example: str = ""  # what waihuctl prints, for the man page

    @property
    def handler_name(self) -> str:
        """``handler``, by its older name (the server looks handlers up by it)."""
        return self.handler

    def bind(self, params: Any) -> dict[str, Any]:
        """Check a request's ``params`` and return the handler's keyword arguments.

        Raises ControlError bad_request naming the unknown, missing or ill-typed param.
        """
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise _bad(f"params must be an object, not {_json_type(params)}")
        known = {p.name: p for p in self.params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            takes = ", ".join(known) or "no params"
            raise _bad(f"{self.name}: unknown param {unknown[0]!r} (takes: {takes})")
        bound = {}
        for param in self.params:
            value = params.get(param.name)
            if value is None:  # absent and null mean the same: not given
                if param.required:
                    raise _bad(f"{self.name}: missing required param {param.name!r}")
                bound[param.name] = param.default
            else:
                bound[param.name] = param.check(value)
        return bound


WAIT_HELP = "wait until the call has ended, then show it as 'call show' does"
CALL_ID_PARAM = Param(
    name="id",
    type=str,
    required=True,
    positional=True,
    help="the call's id, as 'call' printed it or 'calls' lists it, or its first "
    f"{MIN_CALL_ID_PREFIX} or more characters if no other call's id starts with them",
)
# a script's {KEY} placeholders are filled the same way for a real call and a typed chat
VARIABLES_PARAM = Param(
    name="variables",
    type=dict,
    flag="--var",
    metavar="KEY=VALUE",
    help="a value for a {KEY} placeholder of the script; repeatable",
)

CAMPAIGN_PARAM = Param(
    name="campaign",
    type=str,
    required=True,
    positional=True,
    metavar="CAMPAIGN",
    help="the campaign's id or name, as 'campaign list' shows them",
)
NUMBERS_PARAM = Param(
    name="numbers",
    type=list,
    required=True,
    positional=True,
    metavar="NUMBER",
    help="an E.164 number (+8613800138000); give as many as you like",
)
DNC_REASON = "operator"  # the reason kept with numbers added by hand
# the state changes of a campaign: (action, summary, description); each its own method
CAMPAIGN_CHANGES: tuple[tuple[str, str, str], ...] = (
    (
        "start",
        "start dialling a campaign's contacts",
        "Start a draft, stopped or completed campaign: its pending contacts are dialled "
        "within its windows, lines and pace. Refused without contacts, or when its script "
        "or trunk is not loaded.",
    ),
    (
        "pause",
        "pause a running campaign; live calls finish",
        "Stop dialling new contacts of a running campaign until 'campaign resume'; calls in "
        "progress finish.",
    ),
    ("resume", "resume a paused campaign", "Dial a paused campaign's contacts again."),
    (
        "stop",
        "stop a running or paused campaign; live calls finish",
        "Stop a running or paused campaign: calls in progress finish and nothing more is "
        "dialled. 'campaign start' starts it again with the contacts left.",
    ),
)

# ``status``'s result (``waihu.control.status``): times are seconds since the epoch
STATUS_KEYS: tuple[tuple[str, str], ...] = (
    ("version", "the daemon's version (string)"),
    ("pid", "its process id"),
    ("now", "when the daemon answered"),
    ("started_at", "when it started"),
    ("uptime", "seconds since it started"),
    ("draining", "true while it refuses new calls before shutting down"),
    ("live_calls", "calls dialling, ringing or answered now"),
    (
        "trunks",
        "one object per configured trunk, in config order: name, type, state (starting, "
        "up, reachable, registered, failing or down), since (when it entered that state), "
        "detail (one line, or empty), live_calls and lines (how many calls it may carry)",
    ),
    (
        "today",
        "calls since the daemon's local midnight: since (that midnight), calls (every "
        "call placed), outcomes (calls that are over, by outcome) and grades (graded "
        "calls, by grade); a call in progress counts in calls only",
    ),
    (
        "campaigns",
        "how many campaigns are in each state (draft, running, paused, stopped, "
        "completed), or null when the storage keeps no campaigns",
    ),
    (
        "media_clock",
        "calls (on the clock now), ticks (20 ms frames ticked since start), late_ticks "
        "(ticks more than 5 ms late), max_lateness_ms (the worst lateness), skipped (frames "
        "dropped to catch up after a stall), max_tick_ms (the longest tick's work), "
        "source_errors (calls taken off the clock for an error)",
    ),
    ("scripts", "the names of the scripts calls may use"),
    (
        "script_errors",
        "one object per script file the last load refused: file, problems (each "
        "FILE:LINE: KEY: MESSAGE) and in_use (the earlier version still serving calls: "
        "script, loaded_at and script_hash; null when none is)",
    ),
)
STATUS_EXAMPLE = """\
  version       0.1.0
  pid           4242
  uptime        2 h 14 min (since 2026-11-18 08:52:40)
  draining      no
  live calls    3 (office 2, branch 1)
  today         120 calls · answered 64 · no answer 30 · busy 12 · failed 10 · in progress 4
  grades today  A 5 · B 12 · C 40 · D 7
  campaigns     1 running · 2 paused
  media clock   402000 ticks · 3 late (worst 7.21 ms) · slowest tick 0.081 ms
  scripts       demo-ko, second

trunks
  NAME    STATE       SINCE              CALLS  DETAIL
  office  failing     11:03, 3 min       2/10   no answer to 3 OPTIONS probes in a row
  branch  registered  08:53, 2 h 13 min  1/4

script errors
  /etc/waihu/scripts/broken.toml:41: nodes.ask_again.on.default: no node named 'bye_unclaer'
    in use: the version of broken loaded at 10:16 (a1b2c3d4e5f6)"""

# ``trunks``' result (``waihu.control.status.gather_trunks``), one object per trunk
TRUNKS_KEYS: tuple[tuple[str, str], ...] = (
    ("name", "the trunk's name, as configured"),
    ("type", "its provider type (sip, …)"),
    ("state", "starting, up, reachable, registered, failing or down"),
    ("since", "when it entered that state"),
    ("detail", "one line on why, or empty"),
    ("live_calls", "its calls dialling, ringing or answered now"),
    ("lines", "how many calls it may carry"),
    (
        "registration",
        "null when the trunk does not register; else aor (the address of record), "
        "registrar, state (registering, registered or failing), at (when the registrar "
        "last answered or failed to), expires_at (when the binding runs out, while "
        "registered) and detail",
    ),
    (
        "guard",
        "null for a trunk without one; else what its SIP port let in and turned away since "
        "it started: accepted, unknown_dropped and unknown_rejected (sources outside "
        "allow_from), flood_dropped (over flood_rate); the table adds what was turned away "
        "to the detail",
    ),
)
TRUNKS_EXAMPLE = """\
  NAME    STATE       SINCE         CALLS  REGISTRATION     DETAIL
  office  registered  08:53, 2 h    1/10   until 12:06      as sip:8801@example.net until 12:06:40 …
  branch  failing     11:03, 3 min  0/4    failed at 11:05  REGISTER refused: 403 Forbidden at …
  lab     reachable   08:53, 2 h    0/2    not registering  OPTIONS answered 200 OK in 2 ms"""

COMMANDS: tuple[Command, ...] = (
    Command(
        name="status",
        handler="status",
        summary="show the daemon at a glance: trunks, live calls, today's calls, scripts",
        description="Show the running daemon's version, process id and uptime; whether it "
        "is draining (refusing new calls before shutting down); each trunk's state (up, "
        "reachable, registered, failing, down), since when, and its calls in use of its "
        "lines; the live calls; today's calls (since local midnight) by outcome and by "
        "grade; the campaigns running or paused; the media clock's health (late ticks and "
        "the worst lateness in ms); the loaded scripts, and for each script file with "
        "errors its problems, one per line as FILE:LINE: KEY: MESSAGE, and which earlier "
        "version of it still serves calls, if any.",
        render=render_status,
        result_keys=STATUS_KEYS,
        example=STATUS_EXAMPLE,
    ),
    Command(
        name="trunks",
        handler="trunks",
        summary="show each trunk: state, registration, calls in use",
        description="Show each configured trunk on one line: its state (up, reachable, "
        "registered, failing, down) and since when, its calls in use of its lines, its "
        "registration (until when the registrar keeps it, when it last failed, or not "
        "registering) and the detail: what the registrar or the OPTIONS probe last said, "
        "such as 'REGISTER refused: 403 Forbidden at 11:05:12; next try in 20 s'.",
        render=render_trunks,
        result_keys=TRUNKS_KEYS,
        example=TRUNKS_EXAMPLE,
    ),
    Command(
        name="plugins",
        handler="plugins",
        summary="list the loaded plugins with their version and hooks",
        description="List every plugin the daemon loaded through the waihu entry-point "
        "group, built-in ones included: name, distribution, version and the hooks it "
        "implements.",
        render=render_plugins,
    ),
    Command(
        name="call",
        handler="call",
        summary="place one call now",
        description="Dial TARGET through a trunk and talk to the callee by the named script. "
        "Prints the new call's id as soon as dialling starts; with --wait, follows the call "
        "to its end and shows it.",
        params=(
            Param(
                name="target",
                type=str,
                required=True,
                positional=True,
                help="the number to call, or a SIP URI",
            ),
            Param(
                name="script",
                type=str,
                required=True,
                metavar="NAME",
                help="the script to follow (its name, as 'status' lists it)",
            ),
            Param(
                name="trunk",
                type=str,
                metavar="NAME",
                help="the trunk to call through (default: call.trunk, or the only one)",
            ),
            VARIABLES_PARAM,
        ),
        render=render_call_placed,
        waitable=True,
        changes_state=True,
    ),
    Command(
        name="calls",
        handler="calls",
        summary="list recent calls, newest first; filter by campaign, grade, outcome, dates",
        description="List the most recent calls from storage, newest first: id, time, number, "
        "script, status, outcome, SIP status, grade, talk time and campaign. Filters narrow "
        "the list to calls matching all of them. A date is local to the daemon: --since "
        "2026-03-01 --until 2026-03-05 is from the start of the 1st to the end of the 5th; an "
        "ISO date-time (2026-03-05T14:30) is that instant.",
        params=(
            Param(
                name="limit",
                type=int,
                default=20,
                metavar="N",
                minimum=1,
                maximum=CALL_LIMIT_MAX,
                help="how many calls to list (default 20)",
            ),
            Param(
                name="campaign",
                type=str,
                metavar="CAMPAIGN",
                help="only the calls of this campaign (its id or name)",
            ),
            Param(name="grade", type=str, metavar="GRADE", help="only calls graded so (A, B…)"),
            Param(
                name="outcome",
                type=str,
                metavar="OUTCOME",
                help=f"only calls with this outcome ({', '.join(OUTCOMES)})",
            ),
            Param(
                name="since",
                type=str,
                metavar="WHEN",
                help="only calls placed at or after this date (YYYY-MM-DD) or ISO date-time",
            ),
            Param(
                name="until",
                type=str,
                metavar="WHEN",
                help="only calls placed before this ISO date-time, or up to the end of "
                "this date (YYYY-MM-DD)",
            ),
        ),
        render=render_calls,
    ),
    Command(
        name="call.show",
        handler="call_show",
        summary="show one call in full, with its transcript",
        description="Show everything filed about one call, live or finished: number, script, "
        "times, SIP outcome, who hung up, grade, tags, recording, and the transcript with "
        "the node of every robot line and the intent and confidence of every reply.",
        params=(CALL_ID_PARAM,),
        render=render_call,
    ),
    Command(
        name="call.hangup",
        handler="call_hangup",
        summary="hang up a live call: CANCEL while it rings, BYE once answered",
        description="End a live call now. While it rings the INVITE is cancelled (the "
        "record says 487, hung up by the operator while it rang); once answered the robot "
        "hangs up and the call is graded on what was said so far. unavailable when the call "
        "is over already.",
        params=(CALL_ID_PARAM,),
        render=render_value,
        changes_state=True,
    ),
    Command(
        name="call.dtmf",
        handler="call_dtmf",
        summary="send DTMF digits into an answered call",
        description="Send DIGITS (0-9, *, #, A-D) to the far end of an answered call: as "
        "RFC 4733 telephone-events in the call's RTP stream when the far end offered "
        "telephone-event, else one SIP INFO per digit. Returns once they are sent. "
        "unavailable while the call rings or when it is over; bad_request for a character "
        "that is not a digit.",
        params=(
            CALL_ID_PARAM,
            Param(
                name="digits",
                type=str,
                required=True,
                positional=True,
                metavar="DIGITS",
                help="the digits, e.g. 1 or 0#",
            ),
        ),
        render=render_value,
        changes_state=True,
    ),
    Command(
        name="call.recording",
        handler="call_recording",
        summary="one chunk of a call's recording, base64, for 'call fetch' and 'call play'",
        description=f"Up to {RECORDING_CHUNK_BYTES} bytes of the call's WAV file from byte "
        "OFFSET, base64 in 'data', with the file's 'size', its 'channels' (left, right: who "
        "is heard on each) and, for OFFSET 0, the 'sha256' of the whole file to check the "
        "copy against. not_found when the call has no recording or its file is gone; "
        "unavailable while the call is still going on.",
        params=(
            CALL_ID_PARAM,
            Param(name="offset", type=int, default=0, minimum=0, help="the first byte wanted"),
        ),
        render=render_value,
        spelled=False,
    ),
    Command(
        name="watch",
        handler="watch",
        summary="follow calls live: one line per call event",
        description="Print every event of every call as it happens (dialling, ringing, "
        "answer, each line said and heard with its intent, node changes, hang-up, the end "
        "with its grade), one line each, until interrupted. With --call, only that call's "
        "events, and stop when it has ended; with --campaign, only that campaign's calls "
        "and its changes of state. A monitor that falls behind loses events "
        "rather than slowing calls down, and says so. With --json, prints each event as "
        "its raw JSON line.",
        params=(
            Param(
                name="call_id",
                type=str,
                flag="--call",
                metavar="ID",
                help="follow only this live call (its id, or a unique prefix of "
                f"{MIN_CALL_ID_PREFIX} or more characters), and stop when it has ended",
            ),
            Param(
                name="campaign",
                type=str,
                metavar="CAMPAIGN",
                help="follow only this campaign's calls and state changes (its id or name)",
            ),
        ),
        render=render_watching,
        streams=True,
    ),
    Command(
        name="campaign.create",
        handler="campaign_create",
        summary="create a campaign (draft) from a campaign file or from flags",
        description="Create a campaign in state draft from its settings: the keys of a "
        "campaign file (TOML) or of waihuctl's flags, as 'campaign create' sends them. "
        "The settings are checked before anything is stored; every problem names its key.",
        params=(
            Param(
                name="settings",
                type=Mapping,
                required=True,
                help="the campaign's settings, as the keys of a campaign file",
            ),
        ),
        render=render_campaign_created,
        changes_state=True,
    ),
    Command(
        name="campaign.list",
        handler="campaign_list",
        summary="list campaigns with their state and progress, newest first",
        description="List every campaign, newest first: id, name, state, how many of its "
        "contacts are finished (done, skipped or cancelled) of how many, and why it is in "
        "its state (paused by the breaker, completed at its end date…).",
        render=render_campaigns,
    ),
    Command(
        name="campaign.show",
        handler="campaign_show",
        summary="show one campaign: settings, progress, outcomes, grades, the node funnel",
        description="Show one campaign in full: its settings, a progress bar, its contacts "
        "by state, its attempts by outcome, answered calls by grade, the funnel of the "
        "script's nodes (how many answered calls reached each node, ended there, and hung "
        "up there: the line that loses people), its live calls and the reason for its state.",
        params=(CAMPAIGN_PARAM,),
        render=render_campaign,
    ),
    Command(
        name="campaign.clone",
        handler="campaign_clone",
        summary="copy a campaign's settings and contacts into a new draft campaign",
        description="Create a draft campaign with another campaign's settings and contact "
        "list under a new name; every contact starts afresh as pending.",
        params=(
            CAMPAIGN_PARAM,
            Param(
                name="name",
                type=str,
                required=True,
                positional=True,
                metavar="NAME",
                help="the new campaign's name",
            ),
        ),
        render=render_campaign_created,
        changes_state=True,
    ),
    *(
        Command(
            name=f"campaign.{action}",
            handler=f"campaign_{action}",
            summary=summary,
            description=description,
            params=(CAMPAIGN_PARAM,),
            render=render_campaign_summary,
            changes_state=True,
        )
        for action, summary, description in CAMPAIGN_CHANGES
    ),
    Command(
        name="campaign.cancel",
        handler="campaign_cancel",
        summary="cancel every pending contact of a campaign",
        description="Mark every contact still waiting for a call as cancelled: none of them "
        "is dialled. Contacts in a call finish it. The campaign keeps its state.",
        params=(CAMPAIGN_PARAM,),
        render=render_contacts_moved,
        changes_state=True,
    ),
    Command(
        name="campaign.redial",
        handler="campaign_redial",
        summary="queue again the finished contacts whose last outcome is one of those given",
        description="Put the contacts that are finished (done, skipped or cancelled) with "
        "one of the given last outcomes back in the queue, attempts counted afresh; their "
        "earlier attempts stay in the history. Callees who opted out are never called again.",
        params=(
            CAMPAIGN_PARAM,
            Param(
                name="outcomes",
                type=list,
                required=True,
                flag="--outcome",
                metavar="OUTCOME",
                help=f"a last outcome to redial; repeatable ({', '.join(OUTCOMES)})",
            ),
        ),
        render=render_contacts_moved,
        changes_state=True,
    ),
    Command(
        name="campaign.reset",
        handler="campaign_reset",
        summary="every contact of a stopped or paused campaign back to pending, from zero",
        description="Put every contact not in a call back in the queue with its attempts "
        "counted from zero, as if newly imported; the history of attempts is kept. Pause "
        "or stop a running campaign first.",
        params=(CAMPAIGN_PARAM,),
        render=render_contacts_moved,
        changes_state=True,
    ),
    Command(
        name="campaign.import_info",
        handler="campaign_import_info",
        summary="what an import into a campaign checks: region, the script's variables",
        description="The campaign's id, name, region (of numbers written without a country "
        "code), time zone and the variables its script fills, which a contact file must "
        "have as columns. 'campaign import' asks it before reading the file.",
        params=(CAMPAIGN_PARAM,),
        render=render_value,
        spelled=False,
    ),
    Command(
        name="campaign.add_contacts",
        handler="campaign_add_contacts",
        summary="add a batch of checked contacts to a campaign",
        description="Store contacts read and checked by 'campaign import'; refuse those "
        "already in the campaign or on the do-not-call list, each with its line.",
        params=(
            CAMPAIGN_PARAM,
            Param(
                name="contacts",
                type=list,
                items=Mapping,
                required=True,
                help='contacts {"number": E.164, "variables": {...}, "timezone": zone or '
                'null, "line": the line in the file}',
            ),
        ),
        render=render_value,
        changes_state=True,
        spelled=False,
    ),
    Command(
        name="campaign.attempts",
        handler="campaign_attempts",
        summary="one page of a campaign's attempts with their contacts, for an export",
        description="Attempts after the one numbered AFTER, oldest first, with their "
        "contact's variables, outcome, grade, talk time and recording; 'next' is the AFTER "
        "of the next page, or null after the last. 'campaign export' pages through them.",
        params=(
            CAMPAIGN_PARAM,
            Param(name="after", type=int, default=0, minimum=0, help="the last attempt seen"),
            Param(
                name="limit",
                type=int,
                default=ATTEMPTS_PAGE,
                minimum=1,
                maximum=ATTEMPTS_PAGE_MAX,
                help=f"attempts in the page (default {ATTEMPTS_PAGE})",
            ),
        ),
        render=render_value,
        spelled=False,
    ),
    Command(
        name="dnc.add",
        handler="dnc_add",
        summary="add numbers to the do-not-call list",
        description="Add E.164 numbers (+8613800138000) to the do-not-call list shared by "
        "every campaign: they are never dialled, and refused on import.",
        params=(
            NUMBERS_PARAM,
            Param(
                name="reason",
                type=str,
                default=DNC_REASON,
                metavar="TEXT",
                help=f"why, kept with each number (default {DNC_REASON!r})",
            ),
        ),
        render=render_dnc_added,
        changes_state=True,
    ),
    Command(
        name="dnc.remove",
        handler="dnc_remove",
        summary="remove numbers from the do-not-call list",
        description="Remove E.164 numbers from the do-not-call list; campaigns may dial them "
        "again.",
        params=(NUMBERS_PARAM,),
        render=render_dnc_removed,
        changes_state=True,
    ),
    Command(
        name="dnc.list",
        handler="dnc_list",
        summary="list the do-not-call list: number, reason, when added",
        description="Print every number on the do-not-call list with its reason and when "
        "it was added.",
        render=render_dnc_list,
    ),
    Command(
        name="audit",
        handler="audit",
        summary="who changed what, when: the operators' actions, newest first",
        description="Print the audit log of operator actions on campaigns, the do-not-call "
        "list and recordings: when, the unix user who asked, the action and its params.",
        params=(
            Param(
                name="limit",
                type=int,
                default=AUDIT_LIMIT,
                metavar="N",
                minimum=1,
                maximum=AUDIT_LIMIT_MAX,
                help=f"how many entries (default {AUDIT_LIMIT})",
            ),
        ),
        render=render_audit,
    ),
    Command(
        name="recordings.prune",
        handler="recordings_prune",
        summary="delete call recordings older than N days (a dry run unless --apply)",
        description="Report the day folders of recordings older than DAYS days and their "
        "files and size; with --apply, delete them. Call records keep pointing at the "
        "recordings, which then are gone.",
        params=(
            Param(
                name="days",
                type=int,
                required=True,
                positional=True,
                minimum=1,
                metavar="DAYS",
                help="keep this many days of recordings (counting today)",
            ),
            Param(
                name="dry_run",
                type=bool,
                default=True,
                flag="--apply",
                help="delete them (without it, only report what would go)",
            ),
        ),
        render=render_pruned,
        changes_state=True,
    ),
    Command(
        name="shutdown",
        handler="shutdown",
        summary="drain and stop the daemon",
        description="Stop taking calls, let live calls finish up to daemon.drain_timeout, "
        "hang up the rest cleanly, then exit, as SIGTERM does.",
        render=render_shutdown,
        changes_state=True,
    ),
)

COMMANDS_BY_NAME: dict[str, Command] = {command.name: command for command in COMMANDS}


# ───────────────────────── wire format ─────────────────────────


def _json_type(value: Any) -> str:
    return {
        type(None): "null",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _line(message: Mapping[str, Any]) -> bytes:
    # ensure_ascii=False: Korean/Chinese transcripts stay readable in the raw stream;
    # allow_nan=False: NaN is not JSON, and strict parsers (jq) would reject the line
    text = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8") + b"\n"


def encode_request(id: RequestId, method: str, params: Mapping[str, Any] | None = None) -> bytes:
    """One request line."""
    message: dict[str, Any] = {"id": id, "method": method}
    if params:
        message["params"] = dict(params)
    return _line(message)


def encode_result(id: RequestId, result: Any) -> bytes:
    """One success reply line; TypeError/ValueError if ``result`` is not plain JSON."""
    return _line({"id": id, "ok": True, "result": result})


def encode_error(id: RequestId, error: ControlError) -> bytes:
    """One failure reply line."""
    return _line({"id": id, "ok": False, "error": error.to_json()})


def encode_event(event: str, **fields: Any) -> bytes:
    """One pushed event line; TypeError/ValueError if a field is not plain JSON."""
    return _line({"event": event, **fields})


def call_event_message(event: CallEvent) -> dict[str, Any]:
    """The pushed message for one event: ``event``, ``call_id``, ``at``, ``campaign``,
    then its data.

    A data field named like one of the first four is left out rather than
    allowed to hide them.
    """
    message: dict[str, Any] = {
        "event": event.kind,
        "call_id": event.call_id,
        "at": event.at,
        "campaign": event.campaign,
    }
    message.update((k, v) for k, v in event.data.items() if k not in _EVENT_HEAD)
    return message


def dropped_message(call_id: str | None, at: float, count: int) -> dict[str, Any]:
    """The pushed message standing for ``count`` events lost, the first at ``at``."""
    return {"event": DROPPED_EVENT, "call_id": call_id, "at": at, "count": count}


def decode_line(line: bytes) -> dict[str, Any]:
    """The JSON object on one line; ControlError parse_error or bad_request if it is not one."""
    try:
        message = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ControlError("parse_error", f"line is not UTF-8: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise ControlError("parse_error", f"line is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise _bad(f"a message must be a JSON object, not {_json_type(message)}")
    return message


def request_id(message: Mapping[str, Any]) -> RequestId:
    """The request's ``id``; ControlError bad_request if it is neither string, integer nor null."""
    value = message.get("id")
    if value is None or (isinstance(value, str | int) and not isinstance(value, bool)):
        return value
    raise _bad(f"id must be a string, an integer or null, not {_json_type(value)}")


def parse_request(message: Mapping[str, Any]) -> tuple[Command, dict[str, Any]]:
    """The command a request names and its handler's keyword arguments.

    Raises ControlError: bad_request for a malformed request or params,
    unknown_method for a method not in the table.
    """
    extra = sorted(set(message) - {"id", "method", "params"})
    if extra:
        raise _bad(f"unknown key {extra[0]!r} in request (keys: id, method, params)")
    method = message.get("method")
    if not isinstance(method, str):
        raise _bad(f"method must be a string, not {_json_type(method)}")
    command = COMMANDS_BY_NAME.get(method)
    if command is None:
        known = ", ".join(COMMANDS_BY_NAME)
        raise ControlError("unknown_method", f"no method {method!r} (methods: {known})")
    return command, command.bind(message.get("params"))


def parse_reply(message: Mapping[str, Any]) -> Any:
    """The ``result`` of a reply; raises the ControlError an error reply carries."""
    if message.get("ok") is True and "result" in message:
        return message["result"]
    error = message.get("error")
    if message.get("ok") is False and isinstance(error, dict):
        code = error.get("code")
        text = str(error.get("message", ""))
        if code in ERROR_CODES:
            raise ControlError(code, text)
        # a newer daemon's code: keep its message, file it under the nearest meaning
        raise ControlError("internal", f"{code}: {text}")
    raise ControlError("parse_error", f"not a reply: {json.dumps(message)[:200]}")
