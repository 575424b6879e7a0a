"""Who answered a call: a carrier announcement, a voicemail box, a person — from what was
heard in its first seconds (early media included) and which tones sounded.

``classify_phrases`` finds, in recognised text, the phrases carriers and
voicemail boxes say, per language (Mandarin and Korean lists ship here; the
recogniser's spaces and punctuation are ignored); ``decide`` weighs that with
the cadence ``media.tones`` named and says ``announcement`` (with the outcome
it means: invalid number, switched off, busy, unreachable), ``voicemail``,
``person`` or ``unsure``. A guess never hangs up on a person: ``unsure`` goes
on as a person, and a short greeting such as 喂 or 여보세요 is a person.

What it is not: speech recognition or tone detection (their results come in),
or the policy of what to do with each verdict (hang up, leave a message).

Error handling: none — any text is valid input; an unknown language has no
phrases, so only tones decide.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

__all__ = [
    "ANNOUNCEMENTS",
    "PERSON_GREETINGS",
    "VOICEMAIL",
    "Verdict",
    "classify_phrases",
    "decide",
]

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
        "机主",
        "语音助手",
    ),
    "ko": ("음성 사서함", "음성사서함", "소리샘", "삐 소리", "메시지를 남기", "남겨 주"),
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

    kind: str
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


def decide(text: str, language: str, *, tones: str | None = None) -> Verdict:
    """Who answered, from the text heard so far and the tone cadence (``media.tones``)."""
    phrases = classify_phrases(text, language)
    if phrases is not None:
        return phrases
    if tones in TONE_OUTCOMES:
        return Verdict("announcement", TONE_OUTCOMES[tones], f"{tones} tone")
    if tones == "beep":
        return Verdict("voicemail", None, "a beep")
    heard = _normal(text)
    if heard and len(heard) <= MAX_GREETING_CHARS:
        for greeting in PERSON_GREETINGS.get(language, ()):
            if greeting in heard:
                return Verdict("person", None, f"said {greeting!r}")
    return Verdict("unsure", None, "nothing telling heard" if not heard else f"heard {text!r}")
