"""Alerts: one message, delivered to every configured channel, retried, and every attempt recorded.

Channels are a small registry (``SENDERS``): add a kind by adding a function. URLs and
credentials come from the environment or a Prefect Secret block, never from YAML. Delivery never
raises: a channel that stays down yields a failed :class:`Delivery` record, and the monitoring
result it reports on is kept regardless.
"""

from __future__ import annotations

import json
import os
import smtplib
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from tuneops.config import AlertChannel, AlertsConfig


@dataclass
class Alert:
    """What happened, in words and numbers."""

    title: str
    text: str
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass
class Delivery:
    """The outcome of delivering one alert to one channel."""

    channel: str
    delivered: bool
    attempts: int
    error: str | None
    at: str


def _post_json(url: str, body: dict[str, Any], timeout: float) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if response.status >= 300:
            raise OSError(f"HTTP {response.status}")


def send_slack(url: str, alert: Alert, timeout: float) -> None:
    """Slack incoming webhook: ``{"text": ...}`` in Slack's mrkdwn."""
    _post_json(url, {"text": f"*{alert.title}*\n{alert.text}"}, timeout)


def send_teams(url: str, alert: Alert, timeout: float) -> None:
    """Microsoft Teams incoming webhook / workflow: a MessageCard."""
    _post_json(url, {"@type": "MessageCard", "@context": "https://schema.org/extensions", "summary": alert.title,
                     "title": alert.title, "text": alert.text.replace("\n", "<br>")}, timeout)


def send_webhook(url: str, alert: Alert, timeout: float) -> None:
    """Generic webhook: the whole alert as JSON (title, text and the machine-readable payload)."""
    _post_json(url, asdict(alert), timeout)


def send_email(url: str, alert: Alert, timeout: float) -> None:
    """``smtp://[user:password@]host:port/?from=a@b&to=c@d[,e@f]`` (``smtps://`` for implicit TLS)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    message = EmailMessage()
    message["Subject"], message["From"] = alert.title, query["from"][0]
    message["To"] = ", ".join(query["to"][0].split(","))
    message.set_content(alert.text)
    smtp_class = smtplib.SMTP_SSL if parts.scheme == "smtps" else smtplib.SMTP
    with smtp_class(parts.hostname or "localhost", parts.port or 25, timeout=timeout) as smtp:
        if parts.username:
            smtp.login(urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
        smtp.send_message(message)


def send_apprise(url: str, alert: Alert, timeout: float) -> None:
    """Any Apprise URL (Prefect depends on Apprise): discord://, pagerduty://, json://host/path, ..."""
    import apprise

    notifier = apprise.Apprise()
    if not notifier.add(url):
        raise ValueError("Apprise does not understand the URL (check its scheme)")
    if not notifier.notify(title=alert.title, body=alert.text):
        raise OSError("Apprise reported a failed delivery")


SENDERS: dict[str, Callable[[str, Alert, float], None]] = {
    "slack": send_slack, "teams": send_teams, "webhook": send_webhook, "email": send_email, "apprise": send_apprise,
}


def channel_url(channel: AlertChannel) -> str:
    """The channel's URL from its environment variable or Prefect Secret block."""
    if channel.url_env:
        url = os.environ.get(channel.url_env)
        if not url:
            raise KeyError(f"environment variable {channel.url_env} is not set")
        return url
    from prefect.blocks.system import Secret

    return str(Secret.load(channel.secret_block).get())


def describe_channel(channel: AlertChannel) -> str:
    return f"{channel.kind}:{channel.url_env or 'secret/' + str(channel.secret_block)}"


def deliver(alert: Alert, cfg: AlertsConfig, sleep: Callable[[float], None] = time.sleep) -> list[Delivery]:
    """Send ``alert`` to every channel, retrying each with doubling delays; never raises, records everything."""
    records = []
    for channel in cfg.channels:
        name, error, attempts = describe_channel(channel), None, 0
        delivered = False
        try:
            url = channel_url(channel)
        except (KeyError, ValueError, OSError) as exc:
            records.append(Delivery(name, False, 0, f"no URL: {exc}", _now()))
            continue
        for attempt in range(cfg.retries + 1):
            attempts = attempt + 1
            try:
                SENDERS[channel.kind](url, alert, cfg.timeout_seconds)
                delivered, error = True, None
                break
            except (OSError, urllib.error.URLError, smtplib.SMTPException, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                if attempt < cfg.retries:
                    sleep(cfg.retry_delay_seconds * 2 ** attempt)
        records.append(Delivery(name, delivered, attempts, error, _now()))
    return records


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
