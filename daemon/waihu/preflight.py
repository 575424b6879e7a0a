"""What start-up would trip over, found before anything starts.

``waihud --check-config`` and start-up both read the file with
``checked_config``: ``waihu.config.load_config`` validates it, then
``preflight`` looks further, so that a broken configuration is refused in one
place, with every problem at once, before the speech model takes seconds to
load (while the file has problems of its own, only the providers' checks run,
on its valid tables):

- every configured provider's own ``Provider.check`` (a missing speech model,
  a proxy that does not resolve…), through ``waihu.providers.check_providers``;
- the directories the daemon uses: ``daemon.scripts_dir`` must be a readable
  directory; ``daemon.state_dir``, the recordings directory (when calls are
  recorded) and the control socket's directory must be directories the daemon
  can write, or creatable by it;
- ``daemon.control_socket`` must not be taken by something that is not a socket;
- the groups ``daemon.control_group`` and ``daemon.control_admin_group`` exist;
- at least one trunk (otherwise a warning: the daemon runs, but places no call).

``check_scripts`` (``--check-config`` only) then loads every script as
start-up would and finds two scripts of the same name, and warns of each
transfer a script makes to a ``[transfer.NAME]`` the file does not have. At start-up the script
library reports a broken script itself and carries on with the others.

Problems are lines naming the file and the key, ``FILE: KEY: what is wrong:
what to do``; warnings are kept apart from errors. Rights are checked for the
user running the check: ``--check-config`` run as root says nothing about
what the daemon's own user may write.

Error handling: nothing here raises for a problem it finds; it returns it.
Everything here blocks (file system, group database, name resolution in
providers' checks): call it before ``trio.run``, or in a worker thread.

What it is not: the validation of the file's keys and types (``waihu.config``)
or of a script (``waihu.dialog.script``).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

import attrs

from waihu.config import Config, ConfigError, ProviderSection, load_config
from waihu.dialog.library import script_files, without_tts
from waihu.dialog.script import ScriptError, load_script
from waihu.providers import ProviderTypes, check_providers

__all__ = ["Findings", "check_scripts", "checked_config", "preflight"]

# what to do about a directory the daemon may not write
_FIX_RIGHTS = (
    "; give it to the daemon's user, or let systemd create it (StateDirectory=, RuntimeDirectory=)"
)


@attrs.define
class Findings:
    """What a check found: ``errors`` stop start-up; ``warnings`` are only reported."""

    errors: list[str] = attrs.Factory(list)
    warnings: list[str] = attrs.Factory(list)

    def extend(self, other: Findings) -> None:
        """Add ``other``'s findings after these."""
        self.errors += other.errors
        self.warnings += other.warnings


def checked_config(path: Path, types: ProviderTypes) -> tuple[Config, Findings]:
    """The config in ``path`` and what ``preflight`` found in it, errors and warnings.

    Raises ConfigError for a file with problems of its own, adding those the
    providers' checks find in its valid tables, so that one run shows both.
    """
    try:
        config = load_config(path, types)
    except ConfigError as exc:
        found = _provider_findings(Path(path), exc.sections, types)
        raise ConfigError(
            exc.problems + found.errors, warnings=exc.warnings + found.warnings
        ) from None
    return config, preflight(config, types)


def preflight(config: Config, types: ProviderTypes) -> Findings:
    """Everything start-up would find wrong with ``config`` and the machine, at once."""
    found = _provider_findings(config.path, config.providers, types)
    found.errors += [f"{config.path}: {line}" for line in _directory_problems(config)]
    found.errors += [f"{config.path}: {line}" for line in _group_problems(config)]
    if not config.sections("trunk"):
        found.warnings.append(
            f"{config.path}: trunk: no [trunk.NAME] section: the daemon runs but cannot"
            " place calls; add a trunk (see waihud.toml(5))"
        )
    return found


def _provider_findings(
    path: Path, sections: tuple[ProviderSection, ...], types: ProviderTypes
) -> Findings:
    found = Findings()
    for problem in check_providers(sections, types):
        line = f"{path}: {problem.key}: {problem.message}"
        (found.warnings if problem.warning else found.errors).append(line)
    return found


def check_scripts(config: Config) -> Findings:
    """Load every script of ``daemon.scripts_dir`` as start-up would: each one's problems,
    lines needing a TTS when none is configured, and two scripts of the same name."""
    found = Findings()
    names: dict[str, Path] = {}
    for path in script_files(Path(config.daemon.scripts_dir)):
        try:
            script = load_script(path)
        except ScriptError as exc:
            found.errors += exc.problems
            continue
        if config.call.tts is None:
            found.errors += without_tts(script)
        found.warnings += [
            f"{path}: {key}: no [transfer.{name}] in {config.path}: such a transfer fails"
            " and the script's on_transfer_failed applies; add the table (waihud.toml(5))"
            for key, name in script.transfers()
            if name not in config.transfers
        ]
        if script.name in names:  # the library would load the first and refuse this one
            found.errors.append(
                f"{path}: script.name: {script.name!r} is also the name of {names[script.name]}"
            )
        else:
            names[script.name] = path
    return found


# ───────────────────────── directories ─────────────────────────


def _directory_problems(config: Config) -> list[str]:
    daemon = config.daemon
    problems: list[str] = []
    scripts = Path(daemon.scripts_dir)
    if not scripts.exists():
        problems.append(
            f"daemon.scripts_dir: {scripts} does not exist: create it and put the scripts"
            " there (see waihu-script(5)), or set scripts_dir to where they are"
        )
    elif not scripts.is_dir():
        problems.append(f"daemon.scripts_dir: {scripts} is not a directory")
    elif not os.access(scripts, os.R_OK | os.X_OK):
        problems.append(f"daemon.scripts_dir: {scripts} is not readable by {_user()}")

    state = Path(daemon.state_dir)
    state_problem = _unwritable_directory(state)
    if state_problem:
        problems.append(f"daemon.state_dir: {state_problem}")
    recordings = state / daemon.recordings_dir  # an absolute recordings_dir replaces state
    # under a state_dir that is itself unusable, the recordings would only repeat it
    follows_state = state_problem is not None and not Path(daemon.recordings_dir).is_absolute()
    if config.media.record and not follows_state:
        problem = _unwritable_directory(recordings)
        if problem:
            problems.append(f"daemon.recordings_dir: {problem}")

    socket = Path(daemon.control_socket)
    problem = _unwritable_directory(socket.parent, making=socket)
    if problem:
        problems.append(f"daemon.control_socket: {problem}")
    elif _taken(socket):
        problems.append(
            f"daemon.control_socket: {socket} exists and is not a socket: remove it,"
            " or choose another path"
        )
    return problems


def _unwritable_directory(path: Path, *, making: Path | None = None) -> str | None:
    """Why the daemon could not create files in directory ``path`` (creating it first if
    need be), or None if it could. ``making``: the file meant to go there, for the message.
    """
    making = making or path
    if path.exists():
        if not path.is_dir():
            return f"cannot create {making}: {path} is not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"cannot create {making}: {path} is not writable by {_user()}" + _FIX_RIGHTS
        return None
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"cannot create {making}: {ancestor} is a file, not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot create {making}: {ancestor} is not writable by {_user()}" + _FIX_RIGHTS
    return None


def _taken(path: Path) -> bool:
    """Whether something that is not a socket is at ``path`` (a stale socket is fine)."""
    try:
        return not stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


def _user() -> str:
    """Who the rights were checked for: the effective user (not $USER, which may lie)."""
    try:
        return repr(pwd.getpwuid(os.geteuid()).pw_name)
    except KeyError:  # a uid with no name (a container's)
        return f"uid {os.geteuid()}"


# ───────────────────────── groups ─────────────────────────


def _group_problems(config: Config) -> list[str]:
    problems = []
    for key in ("control_group", "control_admin_group"):
        name = getattr(config.daemon, key)
        if name is None:
            continue
        try:
            grp.getgrnam(name)
        except KeyError:
            problems.append(
                f"daemon.{key}: no group named {name!r} on this system"
                " (groupadd it, or fix the name)"
            )
    return problems
