"""``waihuctl``'s local commands: the table of commands it runs itself.

The control methods are ``protocol.COMMANDS``; this is their sibling for
commands that work on files on this machine. Some must not need a running
daemon (``script validate``, ``chat``, ``test``, ``graph``); others read or write a file
here and send the daemon what it needs (``campaign import``, ``campaign
export``, ``campaign create`` from a campaign file, ``dnc import``, ``dnc
export``): those name the control methods they send in ``sends``, take the
global options (socket, ``--json``, timeout) and get a ``DaemonLink``. A local
command named as a control method (``campaign.create``) is how waihuctl spells
that method. ``waihuctl``'s subcommands and ``--help`` and the man page
waihuctl(1) are built from both tables, so a local command is one entry here
plus the function that does it.

What it is not: the commands' work (``script_tools``, ``campaign_cli``) or the
command line (``client``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs

from waihu.control.campaign_cli import (
    create_campaign,
    export_attempts,
    export_dnc,
    import_contacts,
    import_dnc,
)
from waihu.control.completion import SHELLS, print_completion
from waihu.control.protocol import (
    CALL_ID_PARAM,
    CAMPAIGN_PARAM,
    COMMANDS_BY_NAME,
    VARIABLES_PARAM,
    CommandEntry,
    Param,
)
from waihu.control.recording_cli import PLAYERS, fetch_recording, play_recording
from waihu.control.script_tools import DEFAULT_NLU, FALLBACK_NLU, chat, draw, run_cases, validate
from waihu.dialog.graph import FORMATS

__all__ = ["LOCAL_COMMANDS", "LOCAL_COMMANDS_BY_NAME", "DaemonLink", "LocalCommand"]

DEFAULT_REGION = "CN"  # of numbers without a country code in a do-not-call file
# chat and test understand replies with the same classifier
NLU_PARAM = Param(
    name="nlu",
    type=str,
    metavar="TYPE",
    help=f"the intent classifier type, run with its defaults (default {DEFAULT_NLU}; "
    f"{FALLBACK_NLU} while no {DEFAULT_NLU} classifier is installed)",
)


class DaemonLink(Protocol):
    """How a local command reaches the daemon: requests on one connection, opened at the
    first, and whether to print JSON (``--json``)."""

    as_json: bool

    def request(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Send one request and return its result; raises ControlError for an error reply."""
        ...


@attrs.frozen(kw_only=True)
class LocalCommand(CommandEntry):
    """A command waihuctl runs itself: its params, its help, and the function doing it.

    ``run`` is called with every param as a keyword argument (absent optional
    ones get their ``default``), prints its output and returns the exit
    status. ``waihuctl`` spells it as its dot-separated ``words``. A command
    that ``sends`` control methods gets a ``DaemonLink`` as its first argument.
    """

    run: Callable[..., int]
    sends: tuple[str, ...] = attrs.field(default=())

    @sends.validator
    def _known(self, _attribute: Any, value: tuple[str, ...]) -> None:
        unknown = [method for method in value if method not in COMMANDS_BY_NAME]
        if unknown:
            raise ValueError(f"{self.name} sends unknown control methods: {unknown}")


CHANNELS_SAID = "The recording is stereo: the callee on the left channel, the robot on the right."
LOCAL_COMMANDS: tuple[LocalCommand, ...] = (
    LocalCommand(
        name="call.fetch",
        summary="copy a call's recording (WAV) here over the control socket",
        description="Copy the call's recording from the daemon over the control socket, "
        "so an operator needs no access to the daemon's files, and check the copy against "
        "the daemon's size and SHA-256 before it takes its name (a failed copy leaves no "
        f"file). It is written to ID.wav here unless -o names another file ('-o -': "
        f"standard output); an existing file is not overwritten without --force. "
        f"{CHANNELS_SAID} A call that was not answered, or made with recording off, has "
        "none (not_found).",
        params=(
            CALL_ID_PARAM,
            Param(
                name="output",
                type=str,
                flag="-o",
                metavar="FILE",
                help="where to write it (default: ID.wav here; - for standard output)",
            ),
            Param(name="force", type=bool, default=False, help="overwrite FILE if it exists"),
        ),
        run=fetch_recording,
        sends=("call.recording",),
    ),
    LocalCommand(
        name="call.play",
        summary="play a call's recording here with a local audio player",
        description="Fetch the call's recording as 'call fetch' does, into a temporary file, "
        "and play it with the first of "
        f"{', '.join(p[0] for p in PLAYERS)} found on this machine (sox provides play, ffmpeg "
        f"ffplay); the file is removed afterwards. {CHANNELS_SAID} With no player found it "
        "says so and suggests 'call fetch'.",
        params=(CALL_ID_PARAM,),
        run=play_recording,
        sends=("call.recording",),
    ),
    LocalCommand(
        name="script.validate",
        summary="check script files: errors and warnings (no daemon needed)",
        description="Load each script file as waihud would, recordings decoded, then look "
        "for what loads but is probably wrong. Errors (FILE:LINE: KEY: MESSAGE) stop a script "
        "from being used: an unknown node or class, an unreachable node, a loop with no exit, "
        "a recording missing or not decodable. Warnings (FILE:LINE: warning: KEY: MESSAGE): "
        "a dead end (only the handlers leave a node), a {field} with no [variables] default "
        "(every contact must have it), a keyword claimed by two classes of one tier, a keyword "
        "of one class inside another's with no negation rule between them, a pattern matching "
        "an empty reply, a class no node hears, a kb entry whose answer is never said. A file "
        "without errors ends with 'FILE: OK (N nodes, M kb entries)' and its count of "
        "warnings. A dialogue cases file (NAME.cases.toml) is read and held to the script "
        "NAME.toml beside it instead. Exits 1 when a file has an error (with --strict, a "
        "warning too), else 0.",
        params=(
            Param(
                name="files",
                type=list,
                required=True,
                positional=True,
                metavar="FILE",
                help="a script file (.toml); give as many as you like",
            ),
            Param(
                name="strict",
                type=bool,
                default=False,
                help="warnings fail too (exit 1)",
            ),
            Param(
                name="as_json",
                type=bool,
                default=False,
                flag="--json",
                help="print the errors and warnings as one JSON document",
            ),
        ),
        run=validate,
    ),
    LocalCommand(
        name="script.chat",
        summary="talk to a script by typing, each step explained (no daemon needed)",
        description="Run the dialogue engine on a script as text: each line typed is what "
        "the callee says; under it come the class it was taken for, the keyword or pattern "
        "that matched, whether negation applied, the source (keyword, pattern, example, "
        "model) and score, the chain of actions, the node it led to and that node's line in "
        "the file, then the robot's answer. An empty line is silence: the node's silence "
        "window passes at once. At the end the node, grade, tags and the grade's reason are "
        "printed; end of input (Ctrl-D) is the callee hanging up. Standard input may be a "
        "pipe. Recordings are not needed.",
        params=(
            Param(
                name="file",
                type=str,
                required=True,
                positional=True,
                metavar="FILE",
                help="the script file (.toml)",
            ),
            NLU_PARAM,
            VARIABLES_PARAM,
        ),
        run=chat,
    ),
    LocalCommand(
        name="script.test",
        summary="run a script's dialogue test cases (no daemon needed)",
        description="Play each [[case]] of the cases files (replies in; path, end node, "
        "grade, tags, classes, dnc out: see waihu-script(5)) through the dialogue engine and "
        "classifier, as chat does, and print PASS or FAIL per case with what differed. An "
        "empty reply is a silence; after the last reply the callee hangs up. Exits 1 if a "
        "case fails or a file cannot be used (each problem naming the file, the case and the "
        "key), else 0: fit for CI.",
        params=(
            Param(
                name="file",
                type=str,
                required=True,
                positional=True,
                metavar="FILE",
                help="the script file (.toml)",
            ),
            Param(
                name="cases",
                type=list,
                required=True,
                positional=True,
                metavar="CASES.toml",
                help="a cases file (NAME.cases.toml beside the script); as many as you like",
            ),
            NLU_PARAM,
        ),
        run=run_cases,
    ),
    LocalCommand(
        name="script.graph",
        summary="draw a script's flow and knowledge base with Graphviz (no daemon needed)",
        description="Draw the main flow (nodes, end nodes with their grade, edges labelled "
        "with the classes or short/long/default routes), the handlers (no input, no match, "
        "turn cap, DTMF) as dashed edges, and the knowledge base as a cluster with each "
        "entry's then. SVG and PNG need Graphviz's dot program (apt-get install graphviz); "
        "DOT text does not. A PNG shows Chinese only with a font that has its glyphs "
        "(fonts-noto-cjk); an SVG leaves that to the viewer. '-o -' writes to standard output "
        "(DOT unless --format says otherwise).",
        params=(
            Param(
                name="file",
                type=str,
                required=True,
                positional=True,
                metavar="FILE",
                help="the script file (.toml)",
            ),
            Param(
                name="output",
                type=str,
                required=True,
                flag="-o",
                metavar="OUT",
                help="where to write (flow.svg, flow.png, flow.dot; - for standard output)",
            ),
            Param(
                name="format",
                type=str,
                metavar="FORMAT",
                help=f"{' | '.join(FORMATS)} (default: by OUT's suffix, else svg)",
            ),
        ),
        run=draw,
    ),
    LocalCommand(
        name="campaign.create",
        summary="create a campaign (draft) from a campaign file and/or flags",
        description="Create a campaign in state draft. Its settings are the keys of the "
        "campaign file given with --file (TOML: name, script, trunk, caller_id, lines, "
        "calls_per_minute, timezone, windows, ring_timeout, max_attempts, start_date, "
        "end_date, region, dial_format, [retry.OUTCOME] and [[notify]] tables), with any "
        "flag given setting or overriding its key. They are checked here first, every "
        "problem naming the file and the key, then by the daemon, which also knows the "
        "scripts and trunks. Prints the new campaign's id.",
        params=(
            Param(name="file", type=str, metavar="CAMPAIGN.toml", help="a campaign file"),
            Param(name="name", type=str, metavar="NAME", help="the campaign's name"),
            Param(name="script", type=str, metavar="SCRIPT", help="the script to talk by"),
            Param(name="trunk", type=str, metavar="TRUNK", help="the trunk to call through"),
            Param(
                name="caller_id",
                type=str,
                metavar="NUMBER",
                help="the number callees see (+861088886666)",
            ),
            Param(name="lines", type=int, minimum=1, metavar="N", help="calls at once"),
            Param(
                name="calls_per_minute",
                type=float,
                metavar="N",
                help="new calls a minute, at most",
            ),
            Param(
                name="timezone",
                type=str,
                metavar="ZONE",
                help="the time zone of the windows and dates (Asia/Shanghai)",
            ),
            Param(
                name="windows",
                type=list,
                flag="--window",
                metavar="WINDOW",
                help="when calls may be placed ('mon-fri 09:00-12:00'); repeatable",
            ),
            Param(
                name="ring_timeout",
                type=float,
                metavar="SECONDS",
                help="how long to let a call ring",
            ),
            Param(
                name="max_attempts",
                type=int,
                minimum=1,
                metavar="N",
                help="calls to one contact, at most",
            ),
            Param(name="start_date", type=str, metavar="YYYY-MM-DD", help="the first day to call"),
            Param(name="end_date", type=str, metavar="YYYY-MM-DD", help="the last day to call"),
        ),
        run=create_campaign,
        sends=("campaign.create",),
    ),
    LocalCommand(
        name="campaign.import",
        summary="add the contacts of a CSV or .xlsx file to a campaign; report the rejects",
        description="Read a contact list (CSV in any common encoding, or .xlsx) here, check "
        "every row (the number, duplicates, the columns the campaign's script needs, time "
        "zones) and send the rows that pass; the daemon refuses numbers already in the "
        "campaign or on the do-not-call list. Prints the file's encoding, its rows, how many "
        "were added and the rejects by reason with their lines, and writes every reject to "
        "FILE.rejects.csv beside the file, to correct and import again. Exits 0 when the "
        "file was read, rejects or not; 1 when it could not be read at all.",
        params=(
            CAMPAIGN_PARAM,
            Param(
                name="file",
                type=str,
                required=True,
                positional=True,
                metavar="FILE",
                help="the contact list (.csv, .tsv, .txt or .xlsx)",
            ),
            Param(
                name="number_column",
                type=str,
                metavar="COLUMN",
                help="the header of the number column, when not one of number, phone, "
                "mobile, tel, 电话, 手机, 手机号…",
            ),
        ),
        run=import_contacts,
        sends=("campaign.import_info", "campaign.add_contacts"),
    ),
    LocalCommand(
        name="campaign.export",
        summary="write a campaign's attempts to a .csv or .xlsx file",
        description="Write one row per attempt of the campaign so far — number, attempt, "
        "time, outcome, SIP status, grade, tags, talk time, call id, recording, note, then "
        "the contact's own columns — to FILE: CSV (UTF-8 with a byte-order mark, as Excel "
        "wants) or .xlsx, by its suffix.",
        params=(
            CAMPAIGN_PARAM,
            Param(
                name="file",
                type=str,
                required=True,
                positional=True,
                metavar="FILE",
                help="where to write (.csv or .xlsx)",
            ),
        ),
        run=export_attempts,
        sends=("campaign.attempts",),
    ),
    LocalCommand(
        name="dnc.import",
        summary="add every number of a CSV or .xlsx file to the do-not-call list",
        description="Read the numbers of a file laid out like a contact list (a header "
        "naming the number column) and add them to the do-not-call list. Rows whose number "
        "is not valid are reported with their lines and written to FILE.rejects.csv.",
        params=(
            Param(
                name="file",
                type=str,
                required=True,
                positional=True,
                metavar="FILE",
                help="the list (.csv, .tsv, .txt or .xlsx)",
            ),
            Param(
                name="reason",
                type=str,
                metavar="TEXT",
                help="why, kept with each number (default: imported from FILE)",
            ),
            Param(
                name="region",
                type=str,
                default=DEFAULT_REGION,
                metavar="CODE",
                help=f"the region of numbers without a country code (default {DEFAULT_REGION})",
            ),
            Param(
                name="number_column",
                type=str,
                metavar="COLUMN",
                help="the header of the number column, when not one of the usual names",
            ),
        ),
        run=import_dnc,
        sends=("dnc.add",),
    ),
    LocalCommand(
        name="dnc.export",
        summary="write the do-not-call list to a .csv file",
        description="Write every number on the do-not-call list with its reason and when it "
        "was added to FILE, as CSV (UTF-8 with a byte-order mark, as Excel wants).",
        params=(
            Param(
                name="file",
                type=str,
                required=True,
                positional=True,
                metavar="FILE",
                help="where to write (.csv)",
            ),
        ),
        run=export_dnc,
        sends=("dnc.list",),
    ),
    LocalCommand(
        name="completion",
        summary="print the shell completion script for bash or zsh (no daemon needed)",
        description="Print a script that completes waihuctl's commands, options and file "
        "names in bash or zsh. For bash, save it as "
        "/usr/share/bash-completion/completions/waihuctl (or "
        "~/.local/share/bash-completion/completions/waihuctl for yourself); for zsh, as "
        "_waihuctl in a directory of $fpath, such as /usr/local/share/zsh/site-functions.",
        params=(
            Param(
                name="shell",
                type=str,
                required=True,
                positional=True,
                metavar="SHELL",
                help=f"{' or '.join(SHELLS)}",
            ),
        ),
        run=print_completion,
    ),
)

LOCAL_COMMANDS_BY_NAME: dict[str, LocalCommand] = {c.name: c for c in LOCAL_COMMANDS}
