"""The markdown a WeChat Work group sees for a hot lead or a campaign's digest.

A lead reads, in a sales group's chat::

    ## 意向客户 · 五月回访
    > 号码：`138****8000`
    > 客户：张三
    > 评级：<font color="warning">A</font>
    > 标签：价格, 想试用
    > 时长：1分05秒　结束：05-02 14:03
    > 通话：`c-7f3a`（`waihuctl call show c-7f3a`）
    **客户原话**
    > 嗯，你们价格怎么算？
    > 可以先试用吗

The number is always the masked one: a group chat is no place for a full
phone number. The call id comes before the callee's lines so that cutting an
over-long message to the API's limit never loses it. A digest lists the
campaign's matching calls one line each, as many as fit, then "… 及另外 N 通".

The API takes at most ``MAX_MARKDOWN_BYTES`` bytes of UTF-8 content: every
message is cut to that, at a character boundary and after a whole line where
there is one, with a note that it was cut.

Text from outside (the callee's words, the import file's name column) is put
on one line and its markdown characters are replaced by their full-width
forms, so it cannot break the layout or colour itself.

What it is not: the HTTP client (``waihu_wechat.robot``). Times are shown in
the daemon's local time zone.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from waihu.api import Notification

__all__ = [
    "MAX_MARKDOWN_BYTES",
    "MAX_TEXT_BYTES",
    "code",
    "contact_name",
    "digest_markdown",
    "duration_text",
    "fit",
    "inline",
    "lead_markdown",
    "markdown",
    "mention_text",
    "shorten",
    "time_text",
]

MAX_MARKDOWN_BYTES = 4096  # the group robot API refuses longer markdown content (UTF-8 bytes)
MAX_TEXT_BYTES = 2048  # and longer text content
MAX_SHOWN_REPLIES = 5  # callee lines in a lead: enough to judge interest, short enough to read
REPLY_CHARS = 60  # each shown line is cut to this many characters
NAME_CHARS = 20  # a contact name longer than this is cut: it is a label, not a field to read
TAG_CHARS = 80  # all tags of a call together
NAME_KEYS = ("name", "姓名", "名字", "客户")  # import columns taken as the contact's name
CUT_NOTE = "\n> …（内容过长，已截断）"
ELLIPSIS = "…"
GRADE_COLOUR = "warning"  # WeChat Work markdown colours: info (green), comment (grey), warning
# markdown and markup characters in outside text → look-alikes that render as themselves
_INLINE = str.maketrans(
    {"<": "＜", ">": "＞", "*": "＊", "`": "｀", "[": "［", "]": "］", "#": "＃"}
)


def inline(text: str) -> str:
    """Outside text made safe for one markdown line: one line, no markup characters."""
    return " ".join(str(text).split()).translate(_INLINE)


def code(text: str) -> str:
    """Our own text (a masked number, a call id) as inline code: shown exactly, ``*`` included."""
    return "`" + " ".join(str(text).split()).replace("`", "'") + "`"


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending with an ellipsis if it was cut."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def fit(content: str, limit: int = MAX_MARKDOWN_BYTES) -> str:
    """``content`` cut to at most ``limit`` UTF-8 bytes, saying so when it was cut.

    The cut falls at a character boundary, after the last whole line that fits
    (or within the line if there is none), and ``CUT_NOTE`` is appended.
    """
    data = content.encode("utf-8")
    if len(data) <= limit:
        return content
    room = limit - len(CUT_NOTE.encode("utf-8"))
    head = data[:room].decode("utf-8", errors="ignore")  # drops a character cut in two
    line_end = head.rfind("\n")
    if line_end > 0:
        head = head[:line_end]
    return head + CUT_NOTE


def duration_text(seconds: float | None) -> str:
    """``65`` → ``1分05秒``; ``None`` (never answered) → ``—``."""
    if seconds is None:
        return "—"
    whole = round(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes}分{rest:02d}秒" if minutes else f"{rest}秒"


def time_text(at: float | None) -> str:
    """A time of day with its date, in local time: ``05-02 14:03``."""
    return "—" if at is None else time.strftime("%m-%d %H:%M", time.localtime(at))


def contact_name(call: Mapping[str, Any]) -> str | None:
    """The contact's name from the import's columns, if one is there."""
    variables = call.get("variables") or {}
    for key in NAME_KEYS:
        value = variables.get(key)
        if value and str(value).strip():
            return shorten(inline(value), NAME_CHARS)
    return None


def _grade(call: Mapping[str, Any]) -> str:
    grade = call.get("grade")
    return f'<font color="{GRADE_COLOUR}">{inline(grade)}</font>' if grade else "—"


def _tags(call: Mapping[str, Any]) -> str:
    return shorten(", ".join(inline(t) for t in call.get("tags") or ()), TAG_CHARS)


def _campaign(notification: Notification) -> str:
    return inline(notification.campaign_name or notification.campaign_id or "单次呼叫")


def lead_markdown(notification: Notification) -> str:
    """The message of a ``lead`` notification (its first call), within the API's limit."""
    call = notification.calls[0] if notification.calls else {}
    call_id = str(call.get("call_id", "?"))
    lines = [f"## 意向客户 · {_campaign(notification)}"]
    lines.append(f"> 号码：{code(call.get('masked_number') or '—')}")
    if name := contact_name(call):
        lines.append(f"> 客户：{name}")
    lines.append(f"> 评级：{_grade(call)}")
    if tags := _tags(call):
        lines.append(f"> 标签：{tags}")
    lines.append(
        f"> 时长：{duration_text(call.get('duration'))}　结束：{time_text(call.get('ended_at'))}"
    )
    lines.append(f"> 通话：{code(call_id)}（{code('waihuctl call show ' + call_id)}）")
    replies: Sequence[str] = call.get("replies") or ()
    if replies:
        shown = replies[-MAX_SHOWN_REPLIES:]
        more = (
            f"（最后 {len(shown)} 句，共 {len(replies)} 句）" if len(shown) < len(replies) else ""
        )
        lines.append(f"**客户原话**{more}")
        lines.extend(f"> {shorten(inline(r), REPLY_CHARS)}" for r in shown)
    return fit("\n".join(lines))


def _digest_line(call: Mapping[str, Any]) -> str:
    parts = [code(call.get("masked_number") or "—")]
    if name := contact_name(call):
        parts.append(name)
    parts.append(_grade(call))
    if tags := _tags(call):
        parts.append(tags)
    parts.append(duration_text(call.get("duration")))
    parts.append(code(call.get("call_id", "?")))
    return "> " + " · ".join(parts)


def digest_markdown(notification: Notification) -> str:
    """The message of a ``digest`` notification: one line per call, as many as fit."""
    calls = notification.calls
    head = [f"## 意向客户汇总 · {_campaign(notification)}", f"共 {len(calls)} 通"]
    if not calls:
        head.append("> 本次没有符合条件的通话")
    used = len("\n".join(head).encode("utf-8"))
    # room kept for the closing line, sized for the most calls it could ever name
    footer_room = len(f"\n> {ELLIPSIS} 及另外 {len(calls)} 通".encode())
    body: list[str] = []
    for call in calls:
        line = _digest_line(call)
        size = len(line.encode("utf-8")) + 1  # and its newline
        if used + size + footer_room > MAX_MARKDOWN_BYTES:
            break
        body.append(line)
        used += size
    if len(body) < len(calls):
        body.append(f"> {ELLIPSIS} 及另外 {len(calls) - len(body)} 通")
    return fit("\n".join(head + body))


def markdown(notification: Notification) -> str:
    """The message for any notification kind."""
    return (
        digest_markdown(notification)
        if notification.kind == "digest"
        else lead_markdown(notification)
    )


def mention_text(notification: Notification) -> str:
    """The short text message that @-mentions people after the markdown (which cannot)."""
    if notification.kind == "digest":
        text = f"意向客户汇总（{_campaign(notification)}，{len(notification.calls)} 通），请查看"
    else:
        numbers = ", ".join(str(c.get("masked_number") or "—") for c in notification.calls)
        text = f"新的意向客户 {numbers}，请跟进"
    return fit(text, MAX_TEXT_BYTES)
