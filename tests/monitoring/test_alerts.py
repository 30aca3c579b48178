"""Alert delivery to real loopback receivers: Slack, Teams and webhook over HTTP, e-mail over SMTP."""

from __future__ import annotations

from tuneops.config import AlertChannel, AlertsConfig
from tuneops.monitoring.alerts import Alert, deliver

ALERT = Alert("[tuneops] drift: m v3", "Drifting signals:\n- text: 0.91 (threshold 0.55)", {"drift": True})


def test_every_channel_kind_delivers(receiver, smtp_receiver, monkeypatch):
    monkeypatch.setenv("T_SLACK", f"{receiver.url}/slack")
    monkeypatch.setenv("T_TEAMS", f"{receiver.url}/teams")
    monkeypatch.setenv("T_HOOK", f"{receiver.url}/hook")
    monkeypatch.setenv("T_APPRISE", f"json://127.0.0.1:{receiver.url.rsplit(':', 1)[1]}/apprise")
    monkeypatch.setenv("T_MAIL", f"smtp://127.0.0.1:{smtp_receiver.port}/?from=mon@example.com&to=ops@example.com")
    cfg = AlertsConfig(channels=[AlertChannel(kind=k, url_env=e) for k, e in
                                 [("slack", "T_SLACK"), ("teams", "T_TEAMS"), ("webhook", "T_HOOK"),
                                  ("apprise", "T_APPRISE"), ("email", "T_MAIL")]], retries=0)
    records = deliver(ALERT, cfg)
    assert [r.delivered for r in records] == [True] * 5, records
    by_path = dict(receiver.received)
    assert "0.91" in by_path["/slack"]["text"]
    assert by_path["/teams"]["@type"] == "MessageCard" and "0.91" in by_path["/teams"]["text"]
    assert by_path["/hook"]["payload"] == {"drift": True} and by_path["/hook"]["title"] == ALERT.title
    assert "0.91" in by_path["/apprise"]["message"]
    assert len(smtp_receiver.messages) == 1 and "0.91" in smtp_receiver.messages[0]
    assert "Subject: [tuneops] drift: m v3" in smtp_receiver.messages[0]


def test_transient_failure_is_retried(receiver, monkeypatch):
    receiver.fail_first = 2
    monkeypatch.setenv("T_HOOK", f"{receiver.url}/hook")
    waits: list[float] = []
    records = deliver(ALERT, AlertsConfig(channels=[AlertChannel(kind="webhook", url_env="T_HOOK")], retries=3,
                                          retry_delay_seconds=0.5), sleep=waits.append)
    assert records[0].delivered and records[0].attempts == 3
    assert waits == [0.5, 1.0]
    assert len(receiver.received) == 1


def test_down_endpoint_is_recorded_not_raised(dead_url, receiver, monkeypatch):
    monkeypatch.setenv("T_DEAD", dead_url)
    monkeypatch.setenv("T_HOOK", f"{receiver.url}/hook")
    cfg = AlertsConfig(channels=[AlertChannel(kind="slack", url_env="T_DEAD"),
                                 AlertChannel(kind="webhook", url_env="T_HOOK"),
                                 AlertChannel(kind="webhook", url_env="T_UNSET_VARIABLE")],
                       retries=2, retry_delay_seconds=0)
    dead, alive, unset = deliver(ALERT, cfg)
    assert not dead.delivered and dead.attempts == 3 and "Connection refused" in dead.error
    assert alive.delivered
    assert not unset.delivered and "T_UNSET_VARIABLE" in unset.error


def test_url_comes_from_a_prefect_secret_block(prefect_server, receiver):
    from prefect.blocks.system import Secret

    Secret(value=f"{receiver.url}/from-block").save("tuneops-test-hook", overwrite=True)
    records = deliver(ALERT, AlertsConfig(channels=[AlertChannel(kind="slack", secret_block="tuneops-test-hook")]))
    assert records[0].delivered and receiver.received[0][0] == "/from-block"


def test_channel_needs_exactly_one_url_source():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="exactly one of url_env or secret_block"):
        AlertChannel(kind="slack")
    with pytest.raises(ValidationError, match="exactly one"):
        AlertChannel(kind="slack", url_env="A", secret_block="b")
