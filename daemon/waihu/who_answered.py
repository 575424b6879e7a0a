"""Who answered a call: a carrier announcement, a voicemail box, a person — from what was
heard in its first seconds (early media included) and which tones sounded.

``classify_phrases`` finds, in recognised text, the phrases carriers and
voicemail boxes say, per language (Mandarin and Korean lists ship here; the
recogniser's spaces and punctuation are ignored); ``decide`` weighs that with
the cadence ``media.tones`` named and says ``announcement`` (with the outcome
it means: invalid number, switched off, busy, unreachable), ``voicemail``,
``person`` or ``unsure``. A guess never hangs up on a person: ``unsure`` goes
on as a person, and a short greeting such as 喂 or 여보세요 is a person.

``AnswerScreen`` is the screen of one answered call (``waihu.voice.Screen``):
fed every incoming frame (``feed``: tones, and the silence a voicemail
greeting ends with), the recogniser's partial and final text (``heard``) and
the verdict on the call's early media (``early``), it decides once, within
``decide_within`` seconds of the answer:

- a carrier or voicemail phrase in a final result, made of words the
  recogniser is sure of (``SURE_WORD_CONFIDENCE``: a phrase grammar forces
  whatever it hears onto its phrases, and a partial has no confidence), a
  busy or continuous tone, or a voicemail beep → a machine, at once;
- a final result that is a short greeting (喂, 여보세요) → a person, at once;
- anything else by the end of the window → ``unsure``, which goes on as a
  person (a long first sentence, silence, noise).
A person's verdict and a machine's are final. An unsure call goes on as a
person, but the screen listens on to its tones until ``listen_within`` s
after the answer (a voice mail greeting beeps 4–8 s in): a beep proves it a
voicemail after all (``machine_found``). Words do
not: by then the call is in conversation, and a phrase grammar can force a
person's words onto a machine's phrase. Until the verdict, ``grammar`` gives
the phrases the recogniser must expect besides the script's: a phrase
grammar hears nothing it does not list. ``admit`` holds the
callee's utterances back until then (a voicemail greeting must never reach
the dialogue and be answered), and releases a person's or an unsure call's
utterance at once. After a voicemail verdict ``message_cue`` waits for the
moment to leave a message: the beep, or the greeting's end (a stretch of
silence). The core is clock-free — times come in as arguments — and the
async parts read trio's clock, so tests run it on a fake one.

``hear_early`` classifies a call's early media (the 183 audio): the audio is
decoded by a stream of the call's recogniser (which runs its own worker
threads; the whole decode is bounded in time) and its tones tracked in a
worker thread.

What it is not: speech recognition or tone detection (``media.tones``; their
results come in), or the policy of what to do with each verdict (hang up,
leave a message: ``waihu.call`` with ``[who_answered]`` of the config).

Error handling: any text and any frame is valid input; an unknown language
has no phrases, so only tones decide. ``hear_early`` logs a recogniser that
fails or runs out of time and decides on the tones (and any text it got).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence

import attrs
import numpy as np
import trio

from waihu.api import FRAME_MS, AnsweredBy, AsrEngine, ProviderError
from waihu.media.tones import ToneTracker

__all__ = [
    "ANNOUNCEMENTS",
    "DEFAULT_DECIDE_WITHIN",
    "DEFAULT_LISTEN_WITHIN",
    "MACHINES",
    "PERSON_GREETINGS",
    "VOICEMAIL",
    "AnswerScreen",
    "Verdict",
    "classify_phrases",
    "decide",
    "greeting",
    "hear_early",
    "machine_phrases",
    "outcome_of",
]

log = logging.getLogger("waihu.call")

# Phrase → what the announcement means (the outcome to file). Longer, more specific phrases
# first: the first match wins. Sources: the standard recordings of China Mobile, China Unicom,
# China Telecom and of the Korean carriers, as callers hear them.
ANNOUNCEMENTS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "zh": (
        ("您拨打的号码是空号", "invalid_number"),
        ("您拨打的号码不存在", "invalid_number"),
        ("号码有误", "invalid_number"),
        ("空号", "invalid_number"),
        ("已停机", "invalid_number"),
        ("停机", "invalid_number"),
        ("已关机", "switched_off"),
        ("关机", "switched_off"),
        ("正在通话中", "busy"),
        ("通话中", "busy"),
        ("用户正忙", "busy"),
        ("暂时无法接通", "unreachable"),
        ("无法接通", "unreachable"),
        ("不在服务区", "unreachable"),
        ("暂时无法接听", "unreachable"),
    ),
    "ko": (
        ("없는 번호", "invalid_number"),
        ("결번", "invalid_number"),
        ("전원이 꺼져", "switched_off"),
        ("통화중", "busy"),
        ("통화 중", "busy"),
        ("연결이 되지 않", "unreachable"),
        ("연결할 수 없", "unreachable"),
    ),
}
VOICEMAIL: Mapping[str, tuple[str, ...]] = {
    # call assistants (来电秘书) and voice mail; not bare 秘书/助理/留言, which a person says
    "zh": (
        "来电秘书",
        "语音信箱",
        "请在提示音后留言",
        "嘀声后",
        "请留言",
        "智能助理",
        # not bare 机主 (the owner, "我是机主", is a person): what an assistant says of the owner
        "机主暂时",
        "机主现在",
        "机主不方便",
        "语音助手",
    ),
    "ko": (
        "음성 사서함",
        "음성사서함",
        "소리샘",
        "삐 소리",
        "메시지를 남기",
        "남겨 주",
        # "지금은 전화를 받을 수 없습니다": how the carriers' voice mail greets (a person who
        # cannot talk says it otherwise, and does not answer to say it)
        "전화를 받을 수 없",
    ),
}
PERSON_GREETINGS: Mapping[str, tuple[str, ...]] = {
    "zh": ("喂", "你好", "您好", "哪位", "谁啊", "说"),
    "ko": ("여보세요", "네", "예", "누구세요", "말씀하세요"),
}
MAX_GREETING_CHARS = 8  # a person's first words are short; an announcement is a sentence
TONE_OUTCOMES = {"busy": "busy", "continuous": "invalid_number"}

_IGNORED = re.compile(r"[\s,.!?，。！？、]+")


@attrs.frozen
class Verdict:
    """Who answered: ``kind`` is announcement, voicemail, person or unsure; ``outcome`` what an
    announcement means (invalid_number, switched_off, busy, unreachable), else None;
    ``evidence`` what decided it, for the record and the log."""

    kind: AnsweredBy
    outcome: str | None = None
    evidence: str = ""


def _normal(text: str) -> str:
    return _IGNORED.sub("", text)


def classify_phrases(text: str, language: str) -> Verdict | None:
    """An announcement or voicemail phrase in ``text``, or None."""
    heard = _normal(text)
    if not heard:
        return None
    for phrase, outcome in ANNOUNCEMENTS.get(language, ()):
        if _normal(phrase) in heard:
            return Verdict("announcement", outcome, f"said {phrase!r}")
    for phrase in VOICEMAIL.get(language, ()):
        if _normal(phrase) in heard:
            return Verdict("voicemail", None, f"said {phrase!r}")
    return None


def greeting(text: str, language: str) -> Verdict | None:
    """A person, when ``text`` is a short greeting (喂, 여보세요); else None."""
    heard = _normal(text)
    if heard and len(heard) <= MAX_GREETING_CHARS:
        for word in PERSON_GREETINGS.get(language, ()):
            if word in heard:
                return Verdict("person", None, f"said {word!r}")
    return None


def _sure_text(
    text: str, confidence: float | None, words: Sequence[tuple[str, float, float, float]]
) -> str:
    """``text`` with its unsure words left out (a phrase never spans the gap, ``|``); a
    result without words counts as a whole, by its ``confidence``."""
    if not words:
        return text if confidence is None or confidence >= SURE_WORD_CONFIDENCE else ""
    pieces: list[str] = []
    for word, conf, *_ in words:
        pieces.append(word if conf >= SURE_WORD_CONFIDENCE else "|")
    return " ".join(pieces)


def decide(text: str, language: str, *, tones: str | None = None) -> Verdict:
    """Who answered, from the text heard so far and the tone cadence (``media.tones``)."""
    phrases = classify_phrases(text, language)
    if phrases is not None:
        return phrases
    if tones in TONE_OUTCOMES:
        return Verdict("announcement", TONE_OUTCOMES[tones], f"{tones} tone")
    if tones == "beep":
        return Verdict("voicemail", None, "a beep")
    person = greeting(text, language)
    if person is not None:
        return person
    heard = _normal(text)
    return Verdict("unsure", None, "nothing telling heard" if not heard else f"heard {text!r}")


# ───────────────────────── the screen of one answered call ─────────────────────────

MACHINES = frozenset({"announcement", "voicemail"})  # the verdicts that end the conversation
DEFAULT_DECIDE_WITHIN = 3.0  # seconds after the answer: callees judge a robot in three
# seconds after the answer until which an unsure call may still prove a machine by its own
# evidence: a voicemail greeting says "leave a message" and beeps 4–8 s in, an announcement
# after a lead-in tone names its cause 3–5 s in
DEFAULT_LISTEN_WITHIN = 8.0
# A machine's phrase counts only in a final result, and only made of words at least this
# sure: a phrase grammar forces whatever it hears onto its phrases, and a partial result
# carries no confidence. Measured with the Korean test model (espeak-ng speech, grammar of
# the machine phrases and greetings): people's words forced onto a machine's came at
# 0.42–0.91, mostly under 0.8, and never made up a whole phrase at 0.85 or more.
SURE_WORD_CONFIDENCE = 0.85
MACHINE_TONES = frozenset({"busy", "continuous", "beep"})  # cadences that are no person
QUIET_DBFS = -40.0  # a frame below this is silence: the greeting has ended
DEFAULT_MESSAGE_SILENCE = 1.5  # seconds of silence that end a greeting with no beep
EARLY_DECODE_SECONDS = 10.0  # the most a recogniser may take over a call's early media
EARLY_CHUNK_SECONDS = 1.0  # early audio is fed to the recogniser in chunks this long
_FULL_SCALE = 32768.0
TONE_BATCH = 10  # frames analysed for tones together: 200 ms, well inside any cadence


def outcome_of(verdict: Verdict) -> str | None:
    """The campaign outcome a verdict files instead of ``answered`` (None: a person)."""
    if verdict.kind == "announcement":
        return verdict.outcome
    if verdict.kind == "voicemail":
        return "voicemail"
    return None


def _level_dbfs(frame: np.ndarray) -> float:
    if not frame.size:
        return -math.inf
    samples = frame.astype(np.float64) / _FULL_SCALE
    rms = float(np.sqrt(np.mean(samples * samples)))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


class AnswerScreen:
    """Who answered one call, decided once within ``decide_within`` s of the answer.

    ``language`` picks the phrase lists (the script's), ``sample_rate`` the
    call's. ``now`` reads the clock the window is measured on (trio's, so a
    test's fake clock runs it); ``started_at`` is the answer's time on it
    (default: now). See the module docstring for what decides what.
    """

    def __init__(
        self,
        language: str,
        *,
        sample_rate: int,
        decide_within: float = DEFAULT_DECIDE_WITHIN,
        listen_within: float = DEFAULT_LISTEN_WITHIN,
        now: Callable[[], float] = trio.current_time,
        started_at: float | None = None,
    ) -> None:
        self.language = language
        self.sample_rate = sample_rate
        self.now = now
        self.started_at = now() if started_at is None else started_at
        self.deadline = self.started_at + decide_within
        self.listen_until = self.started_at + max(decide_within, listen_within)
        self.verdict: Verdict | None = None
        self.decided_at: float | None = None  # seconds after the answer
        self.decided = trio.Event()  # set with the verdict
        # set when the verdict is a machine: at once, or an unsure call proven one later
        self.machine_found = trio.Event()
        self.revised_at: float | None = None  # seconds after the answer, of a late machine
        self.cue = trio.Event()  # set after a voicemail verdict: the beep, or the greeting's end
        self._finals: list[str] = []  # the final results heard, as they came
        self._sure: list[str] = []  # the same, of their sure words only (``_sure_text``)
        self._tones = ToneTracker(sample_rate)
        self._after: ToneTracker | None = None  # after a voicemail verdict: the beep
        self._quiet_frames = 0
        self._quiet_needed = 0
        self._batch: list[np.ndarray] = []  # frames not yet analysed for tones

    @property
    def machine(self) -> bool:
        """Decided, and not a person: an announcement or voicemail."""
        return self.verdict is not None and self.verdict.kind in MACHINES

    @property
    def listening(self) -> bool:
        """Whether what is heard may still decide: undecided, or unsure and within
        ``listen_within`` of the answer (a voicemail's beep can still tell it)."""
        if self.verdict is None:
            return True
        return self.verdict.kind == "unsure" and self.now() < self.listen_until

    def grammar(self) -> list[str]:
        """Phrases the recogniser should expect besides the script's until the verdict
        (none after): what machines say and what people answer the phone with.
        A phrase grammar hears only what it lists, so without them
        an announcement would be forced onto the script's phrases and never told."""
        if self.verdict is not None:
            return []
        language = self.language
        return [
            *machine_phrases(language),
            *PERSON_GREETINGS.get(language, ()),
        ]

    # ─────────── what comes in ───────────

    def early(self, verdict: Verdict) -> None:
        """The verdict on the call's early media: a machine there decides (answered calls
        whose carrier played its announcement before the answer)."""
        if verdict.kind in MACHINES:
            self._decide(attrs.evolve(verdict, evidence=f"early media: {verdict.evidence}"))

    def heard(
        self,
        text: str,
        *,
        final: bool,
        confidence: float | None = None,
        words: Sequence[tuple[str, float, float, float]] = (),
    ) -> None:
        """Recognised text of the callee's side: a partial result, or an utterance's final
        (with its ``confidence`` and per-word ``words`` when the recogniser gives them).

        A partial decides nothing (it may grow into anything, and has no confidence). A
        final decides a person when it is a short greeting, a machine when its sure words
        (``SURE_WORD_CONFIDENCE``) say a machine's phrase. After the verdict words change
        nothing: the call is in conversation, and a phrase grammar can force a person's
        words onto a machine's phrase even at high confidence."""
        if not final:
            return
        if self.verdict is not None:  # words in conversation never make a machine
            return
        sure = _sure_text(text, confidence, words)
        self._finals.append(text)
        self._sure.append(sure)
        phrases = classify_phrases(" | ".join(self._sure), self.language)
        if phrases is not None:
            self._decide(phrases)
        elif (person := greeting(" ".join(self._finals), self.language)) is not None:
            self._decide(person)

    def feed(self, frame: np.ndarray) -> None:
        """One incoming 20 ms frame (``CallMedia.on_incoming``): tones, then silence.

        Tones are analysed ``TONE_BATCH`` frames at a time (one FFT call for all:
        a tenth of the cost per frame on the media clock's thread, for a verdict at
        most that much later)."""
        if self.verdict is None or (self._after is None and self.listening):
            self._batch.append(frame)
            if len(self._batch) >= TONE_BATCH:
                self._tones.feed_frames(self._take_batch())
                cadence = self._tones.classify()
                if self.verdict is None and cadence in MACHINE_TONES:
                    self._decide(decide("", self.language, tones=cadence))
                    return
                if self.verdict is not None and cadence == "beep":
                    # a voicemail's beep after an unsure verdict: no person's line beeps.
                    # A busy or long tone then is a line the callee left (the call ends
                    # anyway), not evidence that no person answered
                    self._revise(decide("", self.language, tones=cadence))
                    return
            self.expire(self.now())
            return
        if self._after is None or self.cue.is_set():
            return
        quiet = _level_dbfs(frame) < QUIET_DBFS
        self._quiet_frames = self._quiet_frames + 1 if quiet else 0
        self._batch.append(frame)
        if len(self._batch) >= TONE_BATCH:
            self._after.feed_frames(self._take_batch())
        if self._after.classify() == "beep" or self._quiet_frames >= self._quiet_needed:
            self.cue.set()

    def _take_batch(self) -> np.ndarray:
        size = min(frame.size for frame in self._batch)  # the last frame of a call may be short
        frames = np.stack([frame[:size] for frame in self._batch])
        self._batch.clear()
        return frames

    def expire(self, now: float) -> None:
        """At the end of the window an undecided call is ``unsure`` (goes on as a person)."""
        if self.verdict is None and now >= self.deadline:
            said = " ".join(self._finals)
            evidence = f"heard {said!r}" if _normal(said) else "nothing telling heard"
            self._decide(Verdict("unsure", None, evidence), at=now)

    # ─────────── what goes out ───────────

    async def admit(self, utterance: object) -> bool:
        """Hold an utterance until the verdict (at most the window); True: let it reach the
        engine (a person, or unsure)."""
        if self.verdict is None:
            with trio.move_on_at(self.deadline):
                await self.decided.wait()
            self.expire(max(self.now(), self.deadline))
        return not self.machine

    async def run(self) -> None:
        """Decide at the end of the window even when nothing else happens (a task of the
        call; returns once decided)."""
        with trio.move_on_at(self.deadline):
            await self.decided.wait()
        self.expire(max(self.now(), self.deadline))

    def listen_for_message_cue(self, *, silence: float = DEFAULT_MESSAGE_SILENCE) -> None:
        """After a voicemail verdict: set ``cue`` at the beep, or after ``silence`` seconds
        of quiet (the greeting has ended), as frames come in."""
        self._after = ToneTracker(self.sample_rate)
        self._batch.clear()  # the greeting's frames are no part of the wait for the beep
        self._quiet_frames = 0
        self._quiet_needed = max(1, round(silence * 1000 / FRAME_MS))

    def _decide(self, verdict: Verdict, *, at: float | None = None) -> None:
        if self.verdict is not None:
            return
        self.verdict = verdict
        self.decided_at = max(0.0, (self.now() if at is None else at) - self.started_at)
        self.decided.set()
        if verdict.kind in MACHINES:
            self.machine_found.set()

    def _revise(self, verdict: Verdict) -> None:
        """An unsure call proven a machine after the window, by ``verdict``'s evidence (only
        ever called while ``listening`` after an unsure verdict)."""
        self.revised_at = max(0.0, self.now() - self.started_at)
        self.verdict = attrs.evolve(
            verdict, evidence=f"{verdict.evidence}, {self.revised_at:.1f} s after the answer"
        )
        self.machine_found.set()


async def hear_early(
    pcm: np.ndarray,
    sample_rate: int,
    asr: AsrEngine | None,
    language: str,
    *,
    timeout: float = EARLY_DECODE_SECONDS,
) -> Verdict:
    """Who spoke in a call's early media: its text (by a stream of ``asr``, at most
    ``timeout`` s) and its tones (in a worker thread), weighed by ``decide``."""
    tracker = ToneTracker(sample_rate)
    await trio.to_thread.run_sync(tracker.feed_pcm, pcm)
    cadence = tracker.classify()
    text = ""
    if asr is not None and pcm.size:
        text = await _recognise(pcm, sample_rate, asr, language, timeout)
    return decide(text, language, tones=cadence)


def machine_phrases(language: str) -> list[str]:
    """What carriers and voicemail boxes say in ``language``: the grammar early media is
    heard with (no person speaks before the answer, so nothing else needs hearing, and a
    small model hears a short list far better than free speech)."""
    return [phrase for phrase, _ in ANNOUNCEMENTS.get(language, ())] + list(
        VOICEMAIL.get(language, ())
    )


async def _recognise(
    pcm: np.ndarray, sample_rate: int, asr: AsrEngine, language: str, timeout: float
) -> str:
    """The text of ``pcm`` by a fresh stream of ``asr`` (restricted to ``machine_phrases``);
    what was got by ``timeout``."""
    chunk = int(sample_rate * EARLY_CHUNK_SECONDS)
    texts: list[str] = []
    try:
        stream = asr.open_stream(sample_rate=sample_rate)
    except ProviderError as exc:
        log.warning("early media: no recogniser to hear it: %s", exc)
        return ""
    try:
        with trio.move_on_after(timeout) as late:
            stream.set_phrases(machine_phrases(language) or None)
            for start in range(0, pcm.size, chunk):
                partial = await stream.accept(pcm[start : start + chunk])
                if partial is not None:
                    texts[:] = [partial.text]
            texts[:] = [(await stream.finish()).text]
        if late.cancelled_caught:
            log.warning("early media: the recogniser took over %g s; deciding on less", timeout)
    except ProviderError as exc:
        log.warning("early media: the recogniser failed: %s", exc)
    finally:
        stream.close()
    return " ".join(texts)
