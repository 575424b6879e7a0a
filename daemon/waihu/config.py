"""Loading and validating ``waihud.toml`` into typed attrs objects.

The file is read with ``tomllib``; the core's own tables (``[daemon]``,
``[media]``, ``[call]``, ``[campaign]``, ``[metrics]``, ``[inbound]``) are
structured here, and every
provider table is structured with the ``Config`` class of the provider its
``type`` names. Which provider tables exist comes from the one table of kinds,
``waihu.providers.PROVIDER_KINDS``: a singleton kind has exactly one table
(``[storage]``), the others any number of named ones (``[trunk.NAME]``,
``[asr.NAME]``, ``[tts.NAME]``, ``[nlu.NAME]``, ``[notify.NAME]``); a kind's core keys (a
trunk's ``lines`` and ``calls_per_minute``) are taken out of its table and
structured by the core before the plugin's ``Config`` sees the rest. The
people scripts hand calls to are ``[transfer.NAME]`` tables (``TransferConfig``;
their ``trunk`` must name a trunk table, and a ``whisper`` needs ``[call] tts``).
Any other top-level section is refused. Structuring is strict: an unknown key, a wrong
type or a value a validator refuses is an error naming the file and the full
key path, e.g. ``/etc/waihu/waihud.toml: trunk.office.local_port: must be
0–65535``. All problems are collected and reported together: every value
a table's validators refuse (attrs stops at the first, so each validator is
then asked on its own), and a reference such as ``call.trunk`` only when no
such table exists at all (one with its own problems is not "missing").

What it is not: the provider registry (``waihu.plugins``) or the code that
builds providers (``waihu.providers``).
"""

from __future__ import annotations

import socket
import string
import tomllib
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import cattrs
import phonenumbers

from waihu.api import WaihuError, at_least, between, check, one_of, positive
from waihu.media.barge_in import BargeInSettings, backchannels_for
from waihu.providers import PROVIDER_KINDS, ProviderKind, ProviderTypes, TrunkLimits

__all__ = [
    "CORE_SECTIONS",
    "CallConfig",
    "CampaignConfig",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "InboundConfig",
    "MediaConfig",
    "MetricsConfig",
    "ProviderSection",
    "TransferConfig",
    "WhoAnsweredConfig",
    "load_config",
    "parse_listen",
    "structure_strict",
]

DEFAULT_CONFIG_PATH = Path("/etc/waihu/waihud.toml")
LOG_LEVELS = ("debug", "info", "warning", "error")  # daemon.log_level and waihud --log-level


class ConfigError(WaihuError):
    """The configuration cannot be used; ``problems`` lists each fault, file and key first.

    ``warnings`` lists what was found besides, that would not stop start-up on its
    own (reported with the problems, so that one run shows everything);
    ``sections`` the provider tables of the file that are valid nonetheless,
    for checks that can still be made on them.
    """

    def __init__(
        self,
        problems: list[str],
        *,
        warnings: list[str] | None = None,
        sections: tuple[ProviderSection, ...] = (),
    ) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        self.warnings = warnings or []
        self.sections = sections


_not_blank = check(lambda v: bool(v.strip()), "must not be empty")


@attrs.frozen(kw_only=True)
class DaemonConfig:
    """``[daemon]``: where the daemon keeps its socket, state and scripts."""

    control_socket: str = "/run/waihu/control.sock"
    state_dir: str = "/var/lib/waihu"
    scripts_dir: str = "/etc/waihu/scripts"
    recordings_dir: str = "recordings"  # relative to state_dir unless absolute
    log_level: str = attrs.field(default="info", validator=one_of(*LOG_LEVELS))
    drain_timeout: float = attrs.field(default=30.0, validator=positive())
    max_calls: int = attrs.field(default=50, validator=positive())
    cpu_threads: int = attrs.field(default=2, validator=positive())
    # names this daemon in campaign leases and attempts, and in its heartbeat
    node: str = attrs.field(factory=socket.gethostname, validator=_not_blank)
    control_group: str | None = attrs.field(default=None, validator=_not_blank)
    control_admin_group: str | None = attrs.field(default=None, validator=_not_blank)


@attrs.frozen(kw_only=True)
class MediaConfig:
    """``[media]``: voice activity detection, turn-taking and recording."""

    vad_aggressiveness: int = attrs.field(default=2, validator=one_of(0, 1, 2, 3))
    # the [vad.NAME] whose detector calls use; None: webrtcvad at vad_aggressiveness
    vad: str | None = attrs.field(default=None, validator=_not_blank)
    speech_start_ms: int = attrs.field(default=200, validator=positive())
    end_silence_ms: int = attrs.field(default=700, validator=positive())
    preroll_ms: int = attrs.field(default=300, validator=positive())
    max_utterance_ms: int = attrs.field(default=15000, validator=positive())
    jitter_depth: int = attrs.field(default=2, validator=positive())
    record: bool = True
    # barge-in (waihu.media.barge_in): voiced speech this long over a line pauses it (even
    # before the endpointer confirms speech: the line goes on if the sound dies unconfirmed),
    # this long cuts it; recognised words that are not backchannels cut it too
    # (barge_in_words)
    barge_in_ms: int = attrs.field(default=120, validator=positive())
    barge_in_confirm_ms: int = attrs.field(default=800, validator=positive())
    barge_in_words: bool = True
    # after a cut, how long the script waits for words before taking the line up again
    barge_in_recovery_ms: int = attrs.field(default=1500, validator=positive())
    # language → the words that never cut a line; a language not given keeps its defaults
    backchannels: dict[str, tuple[str, ...]] = attrs.field(
        factory=dict,
        validator=check(
            lambda v: all(words and all(w.strip() for w in words) for words in v.values()),
            "each language needs a non-empty list of non-empty words",
        ),
    )
    echo_guard: bool = True  # take the robot's own echo out of what the line returns
    # the short end-of-speech window once the partial recognition is a confident,
    # complete answer for the node ("네", "不需要"); 0 turns the early end off
    quick_end_ms: int = attrs.field(default=250, validator=at_least(0))

    def barge_in_settings(self, language: str) -> BargeInSettings:
        """The barge-in judge's settings for a call in ``language``."""
        return BargeInSettings(
            words=self.barge_in_words,
            pause_ms=self.barge_in_ms,
            confirm_ms=self.barge_in_confirm_ms,
            backchannels=backchannels_for(language, self.backchannels),
        )


@attrs.frozen(kw_only=True)
class CallConfig:
    """``[call]``: defaults for every call the daemon places."""

    trunk: str | None = None  # default trunk; None = the only one configured
    asr: str = "default"
    nlu: str = "default"
    # the [tts.NAME] that speaks lines without a recording; None: no TTS, and a script
    # that needs it is refused
    tts: str | None = attrs.field(default=None, validator=_not_blank)
    caller_id: str | None = None
    ring_timeout: float = attrs.field(default=45.0, validator=positive())
    min_confidence: float = attrs.field(default=0.3, validator=between(0.0, 1.0))
    max_duration: float = attrs.field(default=600.0, validator=positive())


def parse_listen(listen: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:9464"`` for IPv6) as (host, port); ValueError saying why."""
    host, sep, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not (sep and host and port.isdigit() and int(port) <= 65535):
        raise ValueError(f"must be HOST:PORT such as 127.0.0.1:9464 (port 0–65535), not {listen!r}")
    return host, int(port)


def _listen_address(_inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    try:
        parse_listen(value)
    except ValueError as exc:
        raise ValueError(f"{attribute.name}: {exc}") from None


@attrs.frozen(kw_only=True)
class MetricsConfig:
    """``[metrics]``: the Prometheus endpoint (``waihu.metrics``); off unless enabled."""

    enabled: bool = False
    # localhost only by default: the figures name trunks and campaigns
    listen: str = attrs.field(default="127.0.0.1:9464", validator=_listen_address)


@attrs.frozen(kw_only=True)
class CampaignConfig:
    """``[campaign]``: defaults every campaign shares (the scheduler reads them).

    Campaign files themselves are read by ``waihuctl campaign create --file`` on
    the operator's side, so the daemon needs no directory for them.
    """

    default_region: str = attrs.field(
        default="CN",
        validator=check(
            lambda v: v in phonenumbers.SUPPORTED_REGIONS,
            "must be a region code such as CN, KR or US, not {value!r}",
        ),
    )
    # at most one answered call per number per this many hours, across campaigns; 0: no cap
    frequency_cap_hours: float = attrs.field(default=24.0, validator=at_least(0.0))


def _template(_inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    """A line with ``{field}``s, as scripts write them: braces must pair up."""
    try:
        list(string.Formatter().parse(value))
    except ValueError as exc:
        message = f"{attribute.name}: bad placeholder: {exc} (write {{{{ for a brace)"
        raise ValueError(message) from None


TRANSFER_SECTION = "transfer"  # [transfer.NAME]: where scripts hand calls to people
TRANSFER_MODES = ("bridge", "refer")  # waihu.api.TransferMode


@attrs.frozen(kw_only=True)
class TransferConfig:
    """``[transfer.NAME]``: a person (or queue) a script's ``transfer = "NAME"`` hands calls to.

    ``bridge``: the robot dials ``target`` on a second leg through ``trunk``
    (default: the call's own), says ``whisper`` to the agent, then relays the
    audio of both legs while the recording goes on. ``refer``: a blind transfer
    (SIP REFER to ``target``), followed to its outcome.
    """

    mode: str = attrs.field(default="bridge", validator=one_of(*TRANSFER_MODES))
    target: str = attrs.field(validator=_not_blank)  # a number or a SIP URI
    trunk: str | None = attrs.field(default=None, validator=_not_blank)
    ring_timeout: float = attrs.field(default=30.0, validator=positive())
    # the caller id the agent's phone shows; None: [call] caller_id
    caller_id: str | None = attrs.field(default=None, validator=_not_blank)
    # said to the agent before the legs are joined: {grade}, {last_reply}, {number}, {node}
    # and the call's variables ({name}…); empty: no whisper
    whisper: str = attrs.field(default="", validator=_template)


INBOUND_UNKNOWN_STATUSES = (404, 480)  # what a number with no script is answered
NUMBER_SEPARATORS = str.maketrans("", "", " -().")  # RFC 3966 visual separators, not digits


def _scripts_named(numbers: Mapping[str, str]) -> bool:
    return all(number.strip() and script.strip() for number, script in numbers.items())


@attrs.frozen(kw_only=True)
class InboundConfig:
    """``[inbound]``: which script answers the calls trunks take for their ``numbers``.

    ``numbers`` maps a number called (as a trunk lists it) to the script that
    answers it, ``script`` answers the others (None: they are refused with
    ``unknown_status``, 404 Not Found or 480 Temporarily Unavailable).
    ``max_calls`` bounds inbound calls at once (None: only the trunk's
    ``lines`` and ``daemon.max_calls``); a call over a limit gets 486 Busy
    Here. ``answer_after`` is how many seconds an inbound call rings before
    the robot picks up (the greeting renders meanwhile).
    """

    script: str | None = attrs.field(default=None, validator=_not_blank)
    numbers: dict[str, str] = attrs.field(
        factory=dict,
        validator=check(_scripts_named, "must map numbers to script names, not {value}"),
    )
    unknown_status: int = attrs.field(default=404, validator=one_of(*INBOUND_UNKNOWN_STATUSES))
    max_calls: int | None = attrs.field(default=None, validator=positive())
    answer_after: float = attrs.field(default=0.0, validator=between(0.0, 60.0))

    @property
    def enabled(self) -> bool:
        """True when some number has a script: the trunks hand their inbound calls to the core."""
        return self.script is not None or bool(self.numbers)

    def script_for(self, number: str) -> str | None:
        """The script that answers calls to ``number`` (visual separators ignored), or None."""
        wanted = number.translate(NUMBER_SEPARATORS)
        for listed, script in self.numbers.items():
            if listed.translate(NUMBER_SEPARATORS) == wanted:
                return script
        return self.script


WHO_ANSWERED_ACTIONS = ("hangup", "message")  # what a call does once a machine answered
MACHINE_OUTCOMES = ("invalid_number", "switched_off", "busy", "unreachable", "voicemail")


def _actions(actions: Mapping[str, str]) -> bool:
    return all(k in MACHINE_OUTCOMES and v in WHO_ANSWERED_ACTIONS for k, v in actions.items())


DEFAULT_LISTEN_WITHIN = 8.0  # a voicemail greeting beeps 4–8 s after the answer


def _not_before_decide(inst: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value < inst.decide_within:
        raise ValueError(
            f"{attribute.name}: must be at least decide_within ({inst.decide_within}), not {value}"
        )


@attrs.frozen(kw_only=True)
class WhoAnsweredConfig:
    """``[who_answered]``: the screen of who answered (``waihu.who_answered``) and what a
    call does when a machine did.

    ``decide_within``: seconds after the answer by which the screen decides (an
    undecided call goes on as a person, ``unsure``); ``listen_within``: until when
    an unsure call whose line then beeps (a voicemail greeting's end) is filed
    and treated as a voicemail after all.

    ``actions`` maps an outcome (invalid_number, switched_off, busy,
    unreachable, voicemail) to ``hangup`` (the default for each) or
    ``message``: wait for the beep (or ``message_silence`` s of quiet after the
    greeting, at most ``message_wait`` s), say ``message_text`` (by ``[call]
    tts``) or play ``message_recording`` (a WAV file), then hang up.
    """

    enabled: bool = True
    decide_within: float = attrs.field(default=3.0, validator=between(0.5, 30.0))
    # None: 8 s, or decide_within when that is longer (``listen_seconds``)
    listen_within: float | None = attrs.field(
        default=None, validator=[between(0.5, 60.0), _not_before_decide]
    )
    actions: dict[str, str] = attrs.field(
        factory=dict,
        validator=check(
            _actions,
            "must map outcomes (" + ", ".join(MACHINE_OUTCOMES) + ") to "
            + " or ".join(WHO_ANSWERED_ACTIONS) + ", not {value}",
        ),
    )  # fmt: skip
    message_text: str = ""
    message_recording: str | None = attrs.field(default=None, validator=_not_blank)
    message_silence: float = attrs.field(default=1.5, validator=between(0.2, 10.0))
    message_wait: float = attrs.field(default=20.0, validator=between(1.0, 120.0))

    @property
    def listen_seconds(self) -> float:
        """``listen_within`` as set, else 8 s or ``decide_within`` if that is longer."""
        if self.listen_within is not None:
            return self.listen_within
        return max(DEFAULT_LISTEN_WITHIN, self.decide_within)

    def action(self, outcome: str) -> str:
        """What to do when a machine answered with ``outcome`` (``hangup`` unless set)."""
        return self.actions.get(outcome, "hangup")


# the core's own top-level tables → their attrs classes
CORE_SECTIONS: Mapping[str, type] = {
    "daemon": DaemonConfig,
    "media": MediaConfig,
    "call": CallConfig,
    "campaign": CampaignConfig,
    "metrics": MetricsConfig,
    "inbound": InboundConfig,
    "who_answered": WhoAnsweredConfig,
}


@attrs.frozen
class ProviderSection:
    """One provider table: kind, instance name, ``type`` and its structured config.

    ``core`` holds the kind's core keys (``TrunkLimits`` for a trunk), or None
    for a kind that has none.
    """

    kind: str
    name: str
    type: str
    config: Any
    key: str  # full key path, for messages: "trunk.office"
    core: Any = None


@attrs.frozen
class Config:
    """The whole validated configuration of one daemon."""

    path: Path
    daemon: DaemonConfig
    media: MediaConfig
    call: CallConfig
    providers: tuple[ProviderSection, ...]
    campaign: CampaignConfig = CampaignConfig()
    metrics: MetricsConfig = MetricsConfig()
    transfers: Mapping[str, TransferConfig] = attrs.field(factory=dict)  # [transfer.NAME]
    inbound: InboundConfig = InboundConfig()
    who_answered: WhoAnsweredConfig = WhoAnsweredConfig()

    def sections(self, kind: str) -> list[ProviderSection]:
        """The provider sections of one kind, in file order."""
        return [p for p in self.providers if p.kind == kind]

    def section(self, kind: str, name: str) -> ProviderSection | None:
        """The provider section ``[kind.name]`` (``[storage]``: name ``storage``), or None."""
        return next((p for p in self.providers if p.kind == kind and p.name == name), None)

    def trunk_limits(self, name: str) -> TrunkLimits:
        """The core limits of ``[trunk.NAME]`` (``lines`` filled in); LookupError if none."""
        section = self.section("trunk", name)
        if section is None:
            raise LookupError(f"no [trunk.{name}] section in {self.path}")
        limits: TrunkLimits = section.core or TrunkLimits()
        if limits.lines is None:  # left out: the trunk may use every line the daemon has
            limits = attrs.evolve(limits, lines=self.daemon.max_calls)
        return limits


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
        # cattrs stops before __init__ when a value has the wrong type, and attrs stops at
        # the first validator that refuses: the refusals of the other values are found here
        problems += [p for p in _refusals(cls, table, key) if p not in problems]
        raise ConfigError([_reword(file, p) for p in problems]) from None


def _refusals(cls: type, table: Mapping[str, Any], key: str) -> list[str]:
    """What each validator of ``cls`` says about its own value in ``table``, one by one.

    In cattrs' "message @ path" form. A value that does not structure is left
    out (cattrs reported it); so is a validator that needs the whole instance
    (it gets none here), whose refusal the first pass reports when it is first.
    """
    try:
        fields = attrs.fields(attrs.resolve_types(cls))
    except Exception:  # an annotation that does not resolve: cattrs has said what it could
        return []
    found = []
    for field in fields:
        if field.validator is None or field.alias not in table:
            continue
        try:
            value = _converter.structure(table[field.alias], field.type)
            if field.converter is not None:
                value = field.converter(value)
        except Exception:  # cattrs or attrs reported this value already
            continue
        try:
            field.validator(None, field, value)
        except (ValueError, TypeError) as exc:
            found.append(f"{_format_problem(exc, field.type)} @ {key}")
        except Exception:  # not a refusal of this value alone (docstring)
            continue
    return found


def _reword(file: Path | str, problem: str) -> str:
    # cattrs says "message @ path"; operators read "file: path: message"
    message, _, path = problem.rpartition(" @ ")
    path = path.replace("[", ".").replace("]", "")
    name, sep, rest = message.partition(": ")
    if sep and name.isidentifier() and not message.startswith("unknown key"):
        path, message = f"{path}.{name}", rest
    return f"{file}: {path}: {message}"


# ───────────────────────── the whole file ─────────────────────────


def load_config(path: Path | str, provider_types: ProviderTypes) -> Config:
    """Read and validate one configuration file.

    ``provider_types`` maps each provider kind (``trunk``, ``asr``, ``tts``, ``nlu``,
    ``vad``, ``storage``, ``notify``) to the registered classes by ``type`` name. Raises
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
    core: dict[str, Any] = {}
    for key, cls in CORE_SECTIONS.items():
        try:
            core[key] = structure_strict(cls, raw.get(key, {}), file=path, key=key)
        except ConfigError as exc:
            problems.extend(exc.problems)
            core[key] = None

    providers: list[ProviderSection] = []
    present: set[tuple[str, str]] = set()  # (kind, name) of every table, valid or not
    for kind in PROVIDER_KINDS:
        for name, key, table in _tables(path, kind, raw, problems):
            present.add((kind.name, name))
            found = _provider(path, kind, name, key, table, provider_types, problems)
            if found:
                providers.append(found)

    transfers = _transfers(path, raw.get(TRANSFER_SECTION, {}), present, core["call"], problems)

    known = {*CORE_SECTIONS, *(kind.name for kind in PROVIDER_KINDS), TRANSFER_SECTION}
    problems.extend(
        f"{path}: {key}: unknown section (sections: {', '.join(sorted(known))})"
        for key in raw
        if key not in known
    )

    daemon, call, campaign = core["daemon"], core["call"], core["campaign"]
    if call is not None:
        # a table that is there but has its own problems (reported above) is no missing one
        for kind_name in ("trunk", "asr", "nlu", "tts"):
            wanted = getattr(call, kind_name)
            if wanted is not None and (kind_name, wanted) not in present:
                problems.append(f"{path}: call.{kind_name}: no [{kind_name}.{wanted}] section")
    media = core["media"]
    if media is not None and media.vad is not None and ("vad", media.vad) not in present:
        named = sorted(name for kind_name, name in present if kind_name == "vad")
        problems.append(
            f"{path}: media.vad: no [vad.{media.vad}] section"
            f" ({'vad sections: ' + ', '.join(named) if named else 'add one'}, or leave"
            " vad out for the built-in webrtcvad)"
        )

    problems.extend(_who_answered_problems(path, core["who_answered"], call))

    if problems:
        raise ConfigError(problems, sections=tuple(providers))
    return Config(
        path=path,
        daemon=daemon,
        media=core["media"],
        call=call,
        campaign=campaign,
        providers=tuple(providers),
        metrics=core["metrics"],
        transfers=transfers,
        inbound=core["inbound"],
        who_answered=core["who_answered"],
    )


def _who_answered_problems(
    path: Path, who: WhoAnsweredConfig | None, call: CallConfig | None
) -> list[str]:
    """A ``message`` action needs something to say, and a text needs ``[call] tts``."""
    if who is None:
        return []
    problems = []
    if "message" in who.actions.values() and not (who.message_text or who.message_recording):
        problems.append(
            f"{path}: who_answered.actions: 'message' needs who_answered.message_text "
            "or who_answered.message_recording"
        )
    if who.message_text and who.message_recording is None and call is not None and not call.tts:
        problems.append(
            f"{path}: who_answered.message_text: saying it needs [call] tts "
            "(or give who_answered.message_recording)"
        )
    return problems


def _transfers(
    path: Path,
    tables: Any,
    present: set[tuple[str, str]],
    call: CallConfig | None,
    problems: list[str],
) -> dict[str, TransferConfig]:
    """The ``[transfer.NAME]`` tables; a ``trunk`` must name a trunk table, and a
    ``whisper`` needs ``[call] tts`` to be spoken."""
    if not isinstance(tables, Mapping):
        problems.append(f"{path}: {TRANSFER_SECTION}: must be a table of named sections")
        return {}
    found: dict[str, TransferConfig] = {}
    for name, table in tables.items():
        key = f"{TRANSFER_SECTION}.{name}"
        try:
            transfer = structure_strict(TransferConfig, table, file=path, key=key)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if transfer.trunk is not None and ("trunk", transfer.trunk) not in present:
            problems.append(f"{path}: {key}.trunk: no [trunk.{transfer.trunk}] section")
        if transfer.whisper.strip() and call is not None and call.tts is None:
            problems.append(
                f"{path}: {key}.whisper: needs [call] tts to be spoken"
                " (set call.tts, or leave whisper out)"
            )
        found[name] = transfer
    return found


def _tables(
    path: Path, kind: ProviderKind, raw: Mapping[str, Any], problems: list[str]
) -> list[tuple[str, str, Any]]:
    """``(instance name, key path, table)`` of every table of one kind in the file."""
    if kind.singleton:
        if kind.name not in raw:
            problems.append(f"{path}: {kind.name}: missing [{kind.name}] section")
            return []
        return [(kind.name, kind.name, raw[kind.name])]
    tables = raw.get(kind.name, {})
    if not isinstance(tables, Mapping):
        problems.append(f"{path}: {kind.name}: must be a table of named sections")
        return []
    return [(name, f"{kind.name}.{name}", table) for name, table in tables.items()]


def _provider(
    path: Path,
    kind: ProviderKind,
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
    core_table = {}
    if kind.core_keys is not None:
        # the core's keys are reserved in every table of the kind: the plugin never sees them
        core_table = {
            f.name: table.pop(f.name) for f in attrs.fields(kind.core_keys) if f.name in table
        }
    known = provider_types.get(kind.name, {})
    if type_name is None:
        problems.append(
            f"{path}: {key}.type: required key is missing"
            f" (one of: {', '.join(sorted(known)) or 'none installed'})"
        )
        return None
    if type_name not in known:
        problems.append(
            f"{path}: {key}.type: unknown {kind.name} type {type_name!r}"
            f" (installed: {', '.join(sorted(known)) or 'none'})"
        )
        return None
    core = None
    if kind.core_keys is not None:
        try:
            core = structure_strict(kind.core_keys, core_table, file=path, key=key)
        except ConfigError as exc:
            problems.extend(exc.problems)
    try:
        config = structure_strict(known[type_name].Config, table, file=path, key=key)
    except ConfigError as exc:
        problems.extend(exc.problems)
        return None
    if kind.core_keys is not None and core is None:
        return None
    return ProviderSection(
        kind=kind.name, name=name, type=type_name, config=config, key=key, core=core
    )
