"""``WebhookNotifier``: posts each notification as JSON to an endpoint of your own (CRM, bot…).

Configure it with::

    [notify.crm]
    type = "webhook"
    url = "https://crm.example.com/hooks/waihu"
    secret = "a long random string"      # optional: sign every request (see below)
    timeout = 10                          # seconds for one request
    headers = { Authorization = "Bearer ..." }   # optional extra headers

The request: ``POST url`` with ``Content-Type: application/json; charset=utf-8``
and the notification as a UTF-8 JSON object (non-ASCII characters as they
are)::

    {"id": "lead-c-7f3a-crm", "kind": "lead", "campaign_id": "may", "campaign_name": "五月回访",
     "calls": [{"call_id": "c-7f3a", "number": "+8613800138000",
                "masked_number": "138****8000", "grade": "A", "tags": ["价格"],
                "replies": ["嗯，价格怎么算？"], "variables": {"name": "张三"},
                "duration": 65.0, "ended_at": 1714630980.0, ...}],
     "created_at": 1714630981.2}

and the headers:

- ``X-Waihu-Delivery``: the notification's id (percent-encoded UTF-8 where it
  is not plain ASCII), the same on every retry — drop a delivery whose id you
  have already processed;
- ``X-Waihu-Timestamp``: when this try was sent, in unix seconds;
- ``X-Waihu-Signature`` (only with ``secret``): ``sha256=`` and the hex
  HMAC-SHA256, keyed with the secret, of the timestamp, a dot, and the raw
  body bytes. Check it on the raw body before parsing it, and refuse an old
  timestamp (say, more than 5 minutes away from your clock) so a recorded
  request cannot be replayed::

    import hashlib, hmac
    def verify(secret: bytes, timestamp: str, body: bytes, signature: str) -> bool:
        signed = timestamp.encode() + b"." + body
        expected = "sha256=" + hmac.new(secret, signed, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, signature)

Your answer: any 2xx means delivered. 429 or 503 with ``Retry-After``
(seconds or an HTTP date) means "try again then"; 408, 429 and 5xx are tried
again later (the outbox backs off); any other status (a 3xx included:
redirects are not followed, set ``url`` to the final address) means this
notification can never be delivered and is given up, with an error logged.

httpx's ``AsyncClient`` runs on trio here (httpcore's trio backend, chosen
through sniffio); it is made in ``run`` and closed when ``run`` is cancelled.

Error handling: ``deliver`` raises ``DeliveryFailed`` as described above;
network errors and no answer within ``timeout`` are retryable.

What it is not: a receiver, or a retry loop — the outbox retries.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import attrs
import httpx
import trio

from waihu.api import DeliveryFailed, Notification, Provider, ProviderContext, check, positive

__all__ = ["WebhookNotifier", "notification_body", "response_failure", "retry_after", "signature"]

MAX_RETRY_AFTER_S = 3600.0  # a Retry-After further away than an hour is taken as an hour
CLOSE_TIMEOUT_S = 5.0  # closing the client's connections at shutdown
RETRY_STATUSES = frozenset({408, 429})  # 4xx answers that say "not now" rather than "never"
RETRY_AFTER_STATUSES = frozenset({429, 503})  # answers whose Retry-After we honour
DELIVERY_ID_SAFE = "-_.~:@+"  # kept as they are in X-Waihu-Delivery; the rest is percent-encoded
OUR_HEADERS = ("content-type", "x-waihu-delivery", "x-waihu-timestamp", "x-waihu-signature")


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _is_header_text(text: str) -> bool:
    return text.isascii() and text.isprintable() and bool(text.strip())


def notification_body(notification: Notification) -> bytes:
    """The request body: the notification as UTF-8 JSON, non-ASCII characters as they are."""

    def plain(value: Any) -> Any:  # the calls are read-only mappings, not always dicts
        if isinstance(value, Mapping):
            return dict(value)
        raise TypeError(f"{type(value).__name__} is not JSON data")

    data = attrs.asdict(notification)
    return json.dumps(data, ensure_ascii=False, default=plain).encode("utf-8")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``X-Waihu-Signature``: ``sha256=`` hex HMAC-SHA256 of ``timestamp.body``."""
    signed = timestamp.encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None.

    Clamped to 0–``MAX_RETRY_AFTER_S``; an unreadable value is None.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def response_failure(
    status: int, headers: Mapping[str, str], *, now: float
) -> DeliveryFailed | None:
    """What the endpoint's answer means: None if delivered, else the failure."""
    if 200 <= status < 300:
        return None
    after = (
        retry_after(headers.get("retry-after"), now=now) if status in RETRY_AFTER_STATUSES else None
    )
    if status in RETRY_STATUSES or status >= 500:
        return DeliveryFailed(f"HTTP {status}", retry_after=after)
    if 300 <= status < 400:
        where = headers.get("location", "?")
        return DeliveryFailed(
            f"HTTP {status}: redirected to {where}; set url to it", permanent=True
        )
    return DeliveryFailed(f"HTTP {status}: refused", permanent=True)


class WebhookNotifier(Provider):
    """Posts notifications as signed JSON (``waihu.api.Notifier``), ``type = "webhook"``."""

    type_name: ClassVar[str] = "webhook"

    @attrs.frozen(kw_only=True)
    class Config:
        """``[notify.NAME]`` with ``type = "webhook"``."""

        url: str = attrs.field(validator=check(_is_http_url, "must be an http(s) URL"))
        secret: str | None = attrs.field(
            default=None, validator=check(bool, "must not be empty (leave it out to not sign)")
        )
        timeout: float = attrs.field(default=10.0, validator=positive())
        headers: dict[str, str] = attrs.field(
            factory=dict,
            validator=[
                check(
                    lambda v: not {k.lower() for k in v} & set(OUR_HEADERS),
                    f"may not set {', '.join(OUR_HEADERS)}: waihu sets them",
                ),
                check(
                    lambda v: all(_is_header_text(x) for item in v.items() for x in item),
                    "names and values must be printable ASCII, not {value!r}",
                ),
            ],
        )

    config: Config

    def __init__(self, config: Config, context: ProviderContext) -> None:
        super().__init__(config, context)
        self._client: httpx.AsyncClient | None = None
        parts = urlsplit(config.url)
        self._where = f"webhook {parts.scheme}://{parts.netloc}{parts.path}"  # no query: tokens

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
        """Post the notification; DeliveryFailed unless the endpoint answers 2xx."""
        client = self._client
        if client is None:
            raise DeliveryFailed(f"{self._where}: the notifier is not running")
        body = notification_body(notification)
        timestamp = str(int(time.time()))
        headers = {
            **self.config.headers,
            "Content-Type": "application/json; charset=utf-8",
            "X-Waihu-Delivery": quote(notification.id, safe=DELIVERY_ID_SAFE),
            "X-Waihu-Timestamp": timestamp,
        }
        if self.config.secret is not None:
            headers["X-Waihu-Signature"] = signature(self.config.secret, timestamp, body)
        try:
            with trio.fail_after(self.config.timeout):
                response = await client.post(self.config.url, content=body, headers=headers)
        except trio.TooSlowError:
            raise DeliveryFailed(
                f"{self._where}: no answer within {self.config.timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{self._where}: {type(exc).__name__}: {exc}") from None
        failure = response_failure(response.status_code, response.headers, now=time.time())
        if failure is not None:
            raise DeliveryFailed(
                f"{self._where}: {failure}",
                retry_after=failure.retry_after,
                permanent=failure.permanent,
            )
