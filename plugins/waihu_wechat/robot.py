"""``WeChatWorkRobot``: tells a WeChat Work (企业微信) group of hot leads through its robot.

Configure it with the robot's webhook address (group settings → 群机器人 →
the robot → its webhook URL)::

    [notify.sales]
    type = "wechat"
    webhook_url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=..."
    mention_mobiles = ["13800001111"]   # @-mention these group members; "@all" for everyone
    per_minute = 20                     # the API's limit per robot
    timeout = 10                        # seconds for one request

The API: ``POST`` JSON ``{"msgtype": "markdown", "markdown": {"content": ...}}``
to the webhook URL; the answer is HTTP 200 with ``{"errcode": 0, "errmsg":
"ok"}`` when the message was accepted. Markdown content is at most 4096 bytes
of UTF-8 (``waihu_wechat.message`` cuts it). Markdown messages cannot mention
people, so with ``mention_mobiles`` set a short text message carrying
``mentioned_mobile_list`` follows each one.

Pacing: the API takes 20 messages a minute per robot. Every request waits
inside ``deliver`` for its turn in a sliding window of the last
``per_minute`` sends (the outbox calls one ``deliver`` at a time per
notifier, so this is the only queue), so errcode 45009 is normally never
seen; when it is anyway (someone else uses the same key), nothing more is
sent for ``RATE_LIMITED_S``.

httpx's ``AsyncClient`` runs on trio here (httpcore has a trio backend,
chosen through sniffio); its own timeouts and our overall ``trio.fail_after``
follow trio's clock. The client is made in ``run`` and closed when ``run``
is cancelled.

Error handling — what ``deliver`` raises (``DeliveryFailed``):

- errcode 45009 (rate limit) or HTTP 429 → ``retry_after`` 60 s;
- errcode 93000 (webhook URL or key invalid: the robot was removed) →
  ``permanent``: no retry can deliver it;
- other errcodes 40000–49999 (the content was refused, e.g. 40058) →
  ``permanent`` for this message;
- errcode -1 (system busy), other errcodes, HTTP 5xx or 408, a reply that is
  not the API's JSON, network errors, no answer within ``timeout`` → retry
  with the outbox's backoff (``retry_after`` None);
- any other HTTP status (a 404 from a mistyped path…) → ``permanent``.

Messages never show the robot's key (it lets anyone post to the group). The
follow-up mention is best effort: if it fails, that is logged as a warning
and the lead still counts as delivered, since retrying would post the lead
twice.

What it is not: the message layout (``waihu_wechat.message``) or the pacing
rule (``waihu_wechat.pacing``); and it does not retry by itself — the outbox does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

import attrs
import httpx
import trio

from waihu.api import (
    DeliveryFailed,
    Notification,
    Provider,
    ProviderContext,
    between,
    check,
    positive,
)

from .message import markdown, mention_text
from .pacing import SlidingWindow

__all__ = ["WeChatWorkRobot", "reply_failure"]

RATE_PERIOD_S = 60.0  # the API's limit is per minute
PACING_MARGIN_S = 1.0  # our sends may reach the server closer together than we sent them
RATE_LIMITED_S = 60.0  # after errcode 45009, wait this long: the API's window is a minute
MAX_PER_MINUTE = 20  # the API's limit per robot; more would only earn 45009s
CLOSE_TIMEOUT_S = 5.0  # closing the client's connections at shutdown
ERR_OK = 0
ERR_BUSY = -1  # "系统繁忙": try again later
ERR_RATE_LIMITED = 45009  # "api freq out of limit"
ERR_INVALID_WEBHOOK = 93000  # "invalid webhook url": wrong key, or the robot was removed
CONTENT_ERRORS = range(40000, 50000)  # the request itself was refused (40058: bad parameter…)
_KEY = re.compile(r"(key=)[^&]+")
_MOBILE = re.compile(r"\d{5,15}|@all")


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def redact(url: str) -> str:
    """The webhook URL with its key hidden, for messages and logs."""
    return _KEY.sub(r"\1***", url)


def reply_failure(status: int, body: bytes) -> DeliveryFailed | None:
    """What the API's answer means: None if the message was accepted, else the failure."""
    if status == 429:
        return DeliveryFailed("HTTP 429: rate limited", retry_after=RATE_LIMITED_S)
    if status == 408 or status >= 500:
        return DeliveryFailed(f"HTTP {status}")
    if status != 200:
        return DeliveryFailed(f"HTTP {status}: not the robot API", permanent=True)
    try:
        reply = json.loads(body)
        errcode = int(reply["errcode"])
    except (ValueError, KeyError, TypeError):
        return DeliveryFailed(f"not the robot API's answer: {body[:200]!r}")
    errmsg = reply.get("errmsg", "")
    if errcode == ERR_OK:
        return None
    what = f"errcode {errcode}: {errmsg}"
    if errcode == ERR_RATE_LIMITED:
        return DeliveryFailed(f"{what} (rate limited)", retry_after=RATE_LIMITED_S)
    if errcode == ERR_INVALID_WEBHOOK:
        return DeliveryFailed(f"{what} (webhook key invalid or robot removed)", permanent=True)
    if errcode in CONTENT_ERRORS:
        return DeliveryFailed(f"{what} (message refused)", permanent=True)
    return DeliveryFailed(what)  # -1 (busy) and codes we do not know: worth another try


class WeChatWorkRobot(Provider):
    """A WeChat Work group robot (``waihu.api.Notifier``), ``type = "wechat"``."""

    type_name: ClassVar[str] = "wechat"

    @attrs.frozen(kw_only=True)
    class Config:
        """``[notify.NAME]`` with ``type = "wechat"``."""

        webhook_url: str = attrs.field(
            validator=check(
                _is_http_url,
                "must be the robot's http(s) URL, "
                "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...",
            )
        )
        mention_mobiles: list[str] = attrs.field(
            factory=list,
            validator=check(
                lambda v: all(_MOBILE.fullmatch(m) for m in v),
                "must be mobile numbers (digits only) or @all, not {value!r}",
            ),
        )
        per_minute: int = attrs.field(default=MAX_PER_MINUTE, validator=between(1, MAX_PER_MINUTE))
        timeout: float = attrs.field(default=10.0, validator=positive())

    config: Config

    def __init__(self, config: Config, context: ProviderContext) -> None:
        super().__init__(config, context)
        self._client: httpx.AsyncClient | None = None
        self._window = SlidingWindow(config.per_minute, RATE_PERIOD_S, margin=PACING_MARGIN_S)
        self._where = f"WeChat Work robot {redact(config.webhook_url)}"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the HTTP client until cancelled."""
        client = httpx.AsyncClient(timeout=self.config.timeout, follow_redirects=False)
        try:
            self._client = client
            task_status.started()
            await trio.sleep_forever()
        finally:
            self._client = None
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                await client.aclose()

    async def deliver(self, notification: Notification) -> None:
        """Post the notification's markdown to the group (and the mention, if configured)."""
        await self._post({"msgtype": "markdown", "markdown": {"content": markdown(notification)}})
        if self.config.mention_mobiles:
            text = {
                "content": mention_text(notification),
                "mentioned_mobile_list": list(self.config.mention_mobiles),
            }
            try:
                await self._post({"msgtype": "text", "text": text})
            except DeliveryFailed as exc:
                self.context.log.warning(
                    "%s: %s delivered, but the mention failed: %s",
                    self._where,
                    notification.id,
                    exc,
                )

    async def _post(self, message: Mapping[str, Any]) -> None:
        client = self._client
        if client is None:
            raise DeliveryFailed(f"{self._where}: the notifier is not running")
        while (wait := self._window.delay(trio.current_time())) > 0:
            await trio.sleep(wait)
        self._window.record(trio.current_time())
        body = json.dumps(message, ensure_ascii=False).encode("utf-8")
        try:
            with trio.fail_after(self.config.timeout):
                response = await client.post(
                    self.config.webhook_url,
                    content=body,
                    headers={"Content-Type": "application/json; charset=utf-8"},
                )
        except trio.TooSlowError:
            raise DeliveryFailed(
                f"{self._where}: no answer within {self.config.timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise DeliveryFailed(
                f"{self._where}: {type(exc).__name__}: {redact(str(exc))}"
            ) from None
        failure = reply_failure(response.status_code, response.content)
        if failure is None:
            return
        if failure.retry_after is not None:  # rate limited after all: hold every send back
            self._window.block_until(trio.current_time() + failure.retry_after)
        raise DeliveryFailed(
            f"{self._where}: {failure}",
            retry_after=failure.retry_after,
            permanent=failure.permanent,
        )
