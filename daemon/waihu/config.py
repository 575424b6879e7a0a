"""Loading and validating ``waihud.toml`` into typed attrs objects.

The file is read with ``tomllib``; the core's own tables (``[daemon]``,
``[media]``, ``[call]``) are structured here, and every provider table
(``[trunk.NAME]``, ``[asr.NAME]``, ``[nlu.NAME]``, ``[storage]``,
``[notify.NAME]``) is structured with the ``Config`` class of the provider its
``type`` names. Structuring is strict: an unknown key, a wrong type or a value
a validator refuses is an error naming the file and the full key path, e.g.
``/etc/waihu/waihud.toml: trunk.office.local_port: must be 0–65535``. All
problems are collected and reported together.

What it is not: the provider registry (``waihu.plugins``) or the code that
builds providers (``waihu.daemon``).
"""

from __future__ import annotations

import tomllib
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import cattrs

from waihu.api import WaihuError, between, one_of, positive

__all__ = [
    "CallConfig",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "MediaConfig",
    "ProviderSection",
    "load_config",
    "structure_strict",
]

PROVIDER_KINDS = ("trunk", "asr", "nlu", "notify")  # tables of named providers
DEFAULT_CONFIG_PATH = Path("/etc/waihu/waihud.toml")


class ConfigError(WaihuError):
    """The configuration cannot be used; ``problems`` lists each fault, file and key first."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@attrs.frozen(kw_only=True)
class DaemonConfig:
    """``[daemon]``: where the daemon keeps its socket, state and scripts."""

    control_socket: str = "/run/waihu/control.sock"
    state_dir: str = "/var/lib/waihu"
    scripts_dir: str = "/etc/waihu/scripts"
    recordings_dir: str = "recordings"  # relative to state_dir unless absolute
    log_level: str = attrs.field(
        default="info", validator=one_of("debug", "info", "warning", "error")
    )
    drain_timeout: float = attrs.field(default=30.0, validator=positive())
    max_calls: int = attrs.field(default=50, validator=positive())
    cpu_threads: int = attrs.field(default=2, validator=positive())


@attrs.frozen(kw_only=True)
class MediaConfig:
    """``[media]``: voice activity detection, turn-taking and recording."""

    vad_aggressiveness: int = attrs.field(default=2, validator=one_of(0, 1, 2, 3))
    speech_start_ms: int = attrs.field(default=200, validator=positive())
    end_silence_ms: int = attrs.field(default=700, validator=positive())
    preroll_ms: int = attrs.field(default=300, validator=positive())
    max_utterance_ms: int = attrs.field(default=15000, validator=positive())
    jitter_depth: int = attrs.field(default=2, validator=positive())
    record: bool = True


@attrs.frozen(kw_only=True)
class CallConfig:
    """``[call]``: defaults for every call the daemon places."""

    trunk: str | None = None  # default trunk; None = the only one configured
    asr: str = "default"
    nlu: str = "default"
    caller_id: str | None = None
    ring_timeout: float = attrs.field(default=45.0, validator=positive())
    min_confidence: float = attrs.field(default=0.3, validator=between(0.0, 1.0))
    max_duration: float = attrs.field(default=600.0, validator=positive())


@attrs.frozen
class ProviderSection:
    """One provider table: kind, instance name, ``type`` and its structured config."""

    kind: str
    name: str
    type: str
    config: Any
    key: str  # full key path, for messages: "trunk.office"


@attrs.frozen
class Config:
    """The whole validated configuration of one daemon."""

    path: Path
    daemon: DaemonConfig
    media: MediaConfig
    call: CallConfig
    providers: tuple[ProviderSection, ...]

    def sections(self, kind: str) -> list[ProviderSection]:
        """The provider sections of one kind, in file order."""
        return [p for p in self.providers if p.kind == kind]


# ───────────────────────── strict structuring ─────────────────────────


def _strict(kind: type, accept: tuple[type, ...]) -> Callable[[Any, type], Any]:
    def hook(value: Any, _type: type) -> Any:
        # bool is an int in Python; TOML keeps them apart, and so do we
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"must be {_NAMES[kind]}, not a boolean")
        if not isinstance(value, accept):
            raise TypeError(f"must be {_NAMES[kind]}, not {_toml_type(value)}")
        return kind(value)

    return hook


_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _toml_type(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(int, _strict(int, (int,)))
    conv.register_structure_hook(float, _strict(float, (int, float)))
    conv.register_structure_hook(str, _strict(str, (str,)))
    conv.register_structure_hook(bool, _strict(bool, (bool,)))

    def is_sequence(t: Any) -> bool:
        return typing.get_origin(t) in (list, tuple)

    def structure_sequence(value: Any, t: Any) -> Any:
        if not isinstance(value, list):
            raise TypeError(f"must be an array, not {_toml_type(value)}")
        (item,) = typing.get_args(t)[:1] or (Any,)
        items = [conv.structure(v, item) for v in value]
        return tuple(items) if typing.get_origin(t) is tuple else items

    conv.register_structure_hook_func(is_sequence, structure_sequence)
    return conv


_converter = _make_converter()


def _format_problem(exc: BaseException, _type: Any) -> str:
    if isinstance(exc, KeyError):
        return "required key is missing"
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return (
            "unknown key"
            + ("s " if len(exc.extra_fields) > 1 else " ")
            + ", ".join(sorted(exc.extra_fields))
        )
    return str(exc) or type(exc).__name__


def structure_strict(cls: type, table: Mapping[str, Any], *, file: Path | str, key: str) -> Any:
    """Build attrs ``cls`` from a TOML table, or raise ConfigError naming file and key path."""
    if not isinstance(table, Mapping):
        raise ConfigError([f"{file}: {key}: must be a table, not {_toml_type(table)}"])
    try:
        return _converter.structure(dict(table), cls)
    except Exception as exc:  # cattrs wraps everything it found in one group
        problems = cattrs.transform_error(exc, path=key, format_exception=_format_problem)
        raise ConfigError([_reword(file, p) for p in problems]) from None


def _reword(file: Path | str, problem: str) -> str:
    # cattrs says "message @ path"; operators read "file: path: message"
    message, _, path = problem.rpartition(" @ ")
    path = path.replace("[", ".").replace("]", "")
    name, sep, rest = message.partition(": ")
    if sep and name.isidentifier() and not message.startswith("unknown key"):
        path, message = f"{path}.{name}", rest
    return f"{file}: {path}: {message}"


# ───────────────────────── the whole file ─────────────────────────

ProviderTypes = Mapping[str, Mapping[str, type]]  # kind → type name → provider class


def load_config(path: Path | str, provider_types: ProviderTypes) -> Config:
    """Read and validate one configuration file.

    ``provider_types`` maps each provider kind (``trunk``, ``asr``, ``nlu``,
    ``storage``, ``notify``) to the registered classes by ``type`` name. Raises
    ConfigError listing every problem found.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text: {exc.reason}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: {exc}"]) from None

    problems: list[str] = []

    def section(cls: type, key: str) -> Any:
        try:
            return structure_strict(cls, raw.get(key, {}), file=path, key=key)
        except ConfigError as exc:
            problems.extend(exc.problems)
            return None

    daemon = section(DaemonConfig, "daemon")
    media = section(MediaConfig, "media")
    call = section(CallConfig, "call")

    providers: list[ProviderSection] = []
    for kind in PROVIDER_KINDS:
        tables = raw.get(kind, {})
        if not isinstance(tables, Mapping):
            problems.append(f"{path}: {kind}: must be a table of named sections")
            continue
        for name, table in tables.items():
            found = _provider(path, kind, name, f"{kind}.{name}", table, provider_types, problems)
            if found:
                providers.append(found)
    if "storage" in raw:
        found = _provider(
            path, "storage", "storage", "storage", raw["storage"], provider_types, problems
        )
        if found:
            providers.append(found)

    known = {"daemon", "media", "call", "storage", *PROVIDER_KINDS}
    problems.extend(f"{path}: {key}: unknown section" for key in raw if key not in known)

    if call is not None:
        trunks = [p.name for p in providers if p.kind == "trunk"]
        if call.trunk is not None and call.trunk not in trunks:
            problems.append(f"{path}: call.trunk: no [trunk.{call.trunk}] section")
        for kind in ("asr", "nlu"):
            wanted = getattr(call, kind)
            if not any(p.kind == kind and p.name == wanted for p in providers):
                problems.append(f"{path}: call.{kind}: no [{kind}.{wanted}] section")
    if not any(p.kind == "storage" for p in providers):
        problems.append(f"{path}: storage: missing [storage] section")

    if problems:
        raise ConfigError(problems)
    return Config(path=path, daemon=daemon, media=media, call=call, providers=tuple(providers))


def _provider(
    path: Path,
    kind: str,
    name: str,
    key: str,
    table: Any,
    provider_types: ProviderTypes,
    problems: list[str],
) -> ProviderSection | None:
    if not isinstance(table, Mapping):
        problems.append(f"{path}: {key}: must be a table, not {_toml_type(table)}")
        return None
    table = dict(table)
    type_name = table.pop("type", None)
    known = provider_types.get(kind, {})
    if type_name is None:
        problems.append(
            f"{path}: {key}.type: required key is missing"
            f" (one of: {', '.join(sorted(known)) or 'none installed'})"
        )
        return None
    if type_name not in known:
        problems.append(
            f"{path}: {key}.type: unknown {kind} type {type_name!r}"
            f" (installed: {', '.join(sorted(known)) or 'none'})"
        )
        return None
    cls = known[type_name]
    try:
        config = structure_strict(cls.Config, table, file=path, key=key)
    except ConfigError as exc:
        problems.extend(exc.problems)
        return None
    return ProviderSection(kind=kind, name=name, type=type_name, config=config, key=key)
