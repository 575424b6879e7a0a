"""``waihuctl``'s local commands: the table of commands it runs itself, without waihud.

The control methods are ``protocol.COMMANDS``; this is their sibling for
commands that work on files on this machine and must not need a running
daemon (``script validate``, ``script chat``). ``waihuctl``'s subcommands and
``--help`` and the man page waihuctl(1) are built from both tables, so a local
command is one entry here plus the function that does it.

What it is not: the commands' work (``script_tools``) or the command line
(``client``).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from waihu.control.protocol import VARIABLES_PARAM, CommandEntry, Param
from waihu.control.script_tools import DEFAULT_NLU, chat, validate

__all__ = ["LOCAL_COMMANDS", "LOCAL_COMMANDS_BY_NAME", "LocalCommand"]


@attrs.frozen(kw_only=True)
class LocalCommand(CommandEntry):
    """A command waihuctl runs itself: its params, its help, and the function doing it.

    ``run`` is called with every param as a keyword argument (absent optional
    ones get their ``default``), prints its output and returns the exit
    status. ``waihuctl`` spells it as its dot-separated ``words``.
    """

    run: Callable[..., int]


LOCAL_COMMANDS: tuple[LocalCommand, ...] = (
    LocalCommand(
        name="script.validate",
        summary="check script files: routes, intents, recordings (no daemon needed)",
        description="Load each script file as waihud would and print 'FILE: OK (N nodes, "
        "M kb entries)', or every problem found, each naming the file and the key. "
        "Exits 1 if any file has a problem.",
        params=(
            Param(
                name="files",
                type=list,
                required=True,
                positional=True,
                metavar="FILE",
                help="a script file (.toml); give as many as you like",
            ),
        ),
        run=validate,
    ),
    LocalCommand(
        name="script.chat",
        summary="talk to a script by typing (no daemon needed)",
        description="Run the dialogue engine on a script as text: the robot's lines are "
        "printed, each line typed is what the callee says, and the intent it was understood "
        "as is shown under it. An empty line is silence: the script's silence timer fires at "
        "once. At an end node the node, grade and tags are printed; end of input (Ctrl-D) "
        "is the callee hanging up. Recordings are not needed.",
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
                name="nlu",
                type=str,
                default=DEFAULT_NLU,
                metavar="TYPE",
                help=f"the intent classifier type, run with its defaults (default {DEFAULT_NLU})",
            ),
            VARIABLES_PARAM,
        ),
        run=chat,
    ),
)

LOCAL_COMMANDS_BY_NAME: dict[str, LocalCommand] = {c.name: c for c in LOCAL_COMMANDS}
