"""Shell completion for ``waihuctl``, bash and zsh, generated from the one command table.

``waihuctl completion bash`` (or ``zsh``) prints a script that completes
waihuctl's commands, their subcommands, options and file arguments. It is
made with ``shtab`` from a parser built here out of the same entries as
waihuctl's own (``client.waihuctl_commands``), so a new command completes
without anything written for it. ``shtab`` rather than ``argcomplete``: the
script is static, so completing costs no Python start-up, and nothing needs
to be installed or activated in the user's shell beyond sourcing it.

The parser here is shaped for completion, not for parsing: waihuctl joins
``call show`` into one subcommand name before argparse sees it (``call
TARGET`` and ``call show ID`` cannot live side by side otherwise), while a
shell completes word by word, so here each first word is a subcommand whose
further words (``show``, ``fetch``…) are subcommands of its own.

What it is not: waihuctl's parser (``client.build_parser``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping

import shtab

from waihu.api import OUTCOMES
from waihu.control.protocol import CommandEntry, ControlError, Param
from waihu.control.render import emit
from waihu.dialog.graph import FORMATS

__all__ = ["SHELLS", "completion_parser", "completion_script", "print_completion"]

SHELLS = ("bash", "zsh")
# params naming a file on this machine: complete file names there
FILE_PARAMS = frozenset({"file", "files", "cases", "output"})
# params with a closed set of values: complete those
CHOICES: Mapping[str, tuple[str, ...]] = {
    "shell": SHELLS,
    "outcome": OUTCOMES,
    "outcomes": OUTCOMES,
    "format": tuple(FORMATS),
}


def _add_param(parser: argparse.ArgumentParser, param: Param) -> None:
    choices = CHOICES.get(param.name)
    if param.positional:
        action = parser.add_argument(param.name, metavar=param.placeholder, nargs="?")
    elif param.type is bool:
        action = parser.add_argument(param.option, action="store_true", help=param.help)
    else:
        action = parser.add_argument(param.option, metavar=param.placeholder, help=param.help)
    if choices is not None:
        action.choices = choices
    elif param.name in FILE_PARAMS:
        action.complete = shtab.FILE  # type: ignore[attr-defined]


def _add_options(
    parser: argparse.ArgumentParser, options: Iterable[tuple[str, str | None, str]]
) -> None:
    for flag, metavar, help in options:
        if metavar is None:
            parser.add_argument(flag, action="store_true", help=help)
        else:
            action = parser.add_argument(flag, metavar=metavar, help=help)
            if flag == "--socket":
                action.complete = shtab.FILE  # type: ignore[attr-defined]


def completion_parser(
    prog: str,
    commands: Iterable[CommandEntry],
    options: Iterable[tuple[str, str | None, str]],
    *,
    with_options: set[str],
) -> argparse.ArgumentParser:
    """A parser with one nested subparser per word of each command, for shtab.

    ``options`` are the global ones (flag, metavar or None for a switch,
    help); they go on the top parser and on the commands named in
    ``with_options`` (those that talk to the daemon).
    """
    options = list(options)
    top = argparse.ArgumentParser(prog=prog)
    top.add_argument("--version", action="store_true", help="print the version and exit")
    _add_options(top, options)
    # a word → its parser, and that parser's subparsers action (made when first needed)
    parsers: dict[tuple[str, ...], argparse.ArgumentParser] = {(): top}
    actions: dict[tuple[str, ...], argparse._SubParsersAction] = {}

    def node(words: tuple[str, ...], help: str) -> argparse.ArgumentParser:
        if words not in parsers:
            parent = node(words[:-1], "")
            if words[:-1] not in actions:
                actions[words[:-1]] = parent.add_subparsers(metavar="COMMAND")
            parsers[words] = actions[words[:-1]].add_parser(
                words[-1], help=help or f"the {words[-1]} commands"
            )
        return parsers[words]

    commands = list(commands)
    # every subcommand first: after `call`, its subcommands (show, fetch…) are offered,
    # as they would not be once `call`'s own free-text TARGET came first
    for command in commands:
        node(command.words, command.summary)
    for command in commands:
        parser = parsers[command.words]
        for param in command.params:
            _add_param(parser, param)
        if command.name in with_options:
            _add_options(parser, options)
    return top


def completion_script(shell: str) -> str:
    """The completion script for ``shell`` (one of SHELLS)."""
    # imported here: client imports local, which imports this module
    from waihu.control.client import GLOBAL_OPTIONS, PROG, talks_to_daemon, waihuctl_commands

    commands = waihuctl_commands()
    parser = completion_parser(
        PROG,
        commands,
        [(o.flag, o.metavar, o.help) for o in GLOBAL_OPTIONS],
        with_options={c.name for c in commands if talks_to_daemon(c)},
    )
    return shtab.complete(parser, shell=shell)


def print_completion(shell: str) -> int:
    """``waihuctl completion SHELL``: print the script."""
    if shell not in SHELLS:
        raise ControlError("bad_request", f"no shell {shell!r} (shells: {', '.join(SHELLS)})")
    emit(completion_script(shell), sys.stdout)
    return 0
