"""Webhooks without a server: the Standard Webhooks signature (its published test vector, a
tampered body, a stale timestamp), which events announce what, URL rules, the private-address
rule, what an HTTP answer means, delivery ids and the delivery workflow's deadline."""

from __future__ import annotations

import base64
import ipaddress
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from activities.webhook_http import AddressRefused, is_public, public_addresses, verdict
from agentrun.contracts import AgentConfig, strict_validate
from agentrun.contracts.webhooks import WebhookDeliveryInput
from agentrun.protocol.events import EventType
from agentrun.protocol.statuses import RunStatus
from agentrun.protocol.webhooks import (
    WebhookEvent,
    WebhookVerificationError,
    new_secret,
    sign,
    url_problem,
    verify,
    webhook_event_of,
)
from agentrun.store.webhooks import _run_targets, delivery_id, parse_events
from workflows.webhook import delivery_deadline

# The specification's own example (https://www.standardwebhooks.com): matching it is what lets
# a receiver check our deliveries with any Standard Webhooks library.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def _headers(sig: str, msg_id: str = VECTOR_ID, ts: int = VECTOR_TS) -> dict[str, str]:
    return {"Webhook-Id": msg_id, "Webhook-Timestamp": str(ts), "Webhook-Signature": sig}


def test_the_signature_is_the_standard_webhooks_reference_one() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE
    verify(VECTOR_SECRET, _headers(VECTOR_SIGNATURE), VECTOR_BODY, now=VECTOR_TS + 10)


def test_a_tampered_body_id_or_timestamp_fails_verification() -> None:
    good = _headers(VECTOR_SIGNATURE)
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify(VECTOR_SECRET, good, b'{"test": 2432232315}', now=VECTOR_TS)
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify(
            VECTOR_SECRET,
            _headers(VECTOR_SIGNATURE, msg_id="msg_other"),
            VECTOR_BODY,
            now=VECTOR_TS,
        )
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify(
            VECTOR_SECRET,
            _headers(VECTOR_SIGNATURE, ts=VECTOR_TS + 1),
            VECTOR_BODY,
            now=VECTOR_TS,
        )
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify(new_secret(), good, VECTOR_BODY, now=VECTOR_TS)


def test_a_stale_or_missing_timestamp_is_refused_and_any_listed_signature_counts() -> None:
    with pytest.raises(WebhookVerificationError, match="too far"):
        verify(VECTOR_SECRET, _headers(VECTOR_SIGNATURE), VECTOR_BODY, now=VECTOR_TS + 301)
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify(VECTOR_SECRET, {"webhook-id": VECTOR_ID}, VECTOR_BODY)
    several = f"v1,bm90LWl0 {VECTOR_SIGNATURE}"
    verify(VECTOR_SECRET, _headers(several), VECTOR_BODY, now=VECTOR_TS)


def test_new_secrets_are_32_random_bytes_with_the_prefix() -> None:
    a, b = new_secret(), new_secret()
    assert a != b and a.startswith("whsec_")
    assert len(base64.b64decode(a.removeprefix("whsec_"))) == 32
    now = int(time.time())
    verify(a, _headers(sign(a, "msg_1", now, b"{}"), "msg_1", now), b"{}")


def test_which_events_announce_a_webhook_event() -> None:
    approval = EventType.TOOL_APPROVAL_REQUESTED.value
    assert webhook_event_of(approval, {}) is WebhookEvent.TOOL_APPROVAL_REQUESTED
    status = EventType.RUN_STATUS.value
    for s in RunStatus:
        expected = WebhookEvent.RUN_FINISHED if s.terminal else None
        assert webhook_event_of(status, {"status": s.value}) is expected
    assert webhook_event_of(status, {"status": "SOMETHING_NEW"}) is None
    assert webhook_event_of(EventType.TOOL_RESULT_REQUESTED.value, {}) is None
    assert webhook_event_of(EventType.MESSAGE_DELTA.value, {"status": "DONE"}) is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://hooks.example.com/agentrun?x=1", None),
        ("http://10.0.0.5:8080/in", None),  # refused when called, not when registered
        ("ftp://hooks.example.com/", "http:// or https://"),
        ("https:///nohost", "http:// or https://"),
        ("https://user:pw@hooks.example.com/", "no user or password"),
        ("https://hooks.example.com/#frag", "no #fragment"),
        ("https://hooks.example.com/a b", "no spaces"),
        ("https://hooks.example.com:99999/", "not a URL"),
        ("https://hooks.example.com/" + "a" * 2000, "at most 2000"),
    ],
)
def test_webhook_urls(url: str, problem: str | None) -> None:
    found = url_problem(url)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_a_runs_own_webhooks_are_checked_where_they_are_made_and_skipped_when_bad() -> None:
    config = strict_validate(
        AgentConfig,
        {"webhooks": [{"url": "https://a.example/h", "events": ["run.finished"]}]},
    )
    assert config.webhooks and config.webhooks[0].events == ["run.finished"]
    with pytest.raises(ValueError, match=r"unknown webhook event 'run\.started'"):
        AgentConfig(webhooks=[{"url": "https://a.example/h", "events": ["run.started"]}])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="http:// or https://"):
        AgentConfig(webhooks=[{"url": "file:///etc/passwd", "events": ["run.finished"]}])  # type: ignore[list-item]
    # Decoded in a worker (no client-side checks): the outbox skips what it cannot use.
    stored = {
        "webhooks": [
            {"url": "file:///etc/passwd", "events": ["run.finished"]},
            {"url": "https://b.example/h", "events": ["run.finished", "from.the.future"]},
            "junk",
        ]
    }
    targets = _run_targets(stored)
    assert [(t.url, sorted(t.events)) for t in targets] == [
        ("https://b.example/h", [WebhookEvent.RUN_FINISHED.value])
    ]
    assert _run_targets(None) == [] and _run_targets({"webhooks": None}) == []


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # shared address space
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "2002:7f00:1::",  # 6to4 around 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 around 169.254.169.254
    ],
)
def test_private_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


def test_public_addresses_are() -> None:
    assert is_public(ipaddress.ip_address("8.8.8.8"))
    assert is_public(ipaddress.ip_address("2606:4700:4700::1111"))


async def test_a_private_address_is_refused_unless_allowed() -> None:
    with pytest.raises(AddressRefused, match="AGENTRUN_WEBHOOK_ALLOW_PRIVATE"):
        await public_addresses("127.0.0.1", 80, allow_private=False)
    with pytest.raises(AddressRefused):
        await public_addresses("localhost", 80, allow_private=False)
    assert await public_addresses("127.0.0.1", 80, allow_private=True) == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("code", "meaning"),
    [
        (200, "delivered"),
        (204, "delivered"),
        (410, "gone"),
        (408, "retry"),
        (429, "retry"),
        (500, "retry"),
        (503, "retry"),
        (301, "refused"),
        (400, "refused"),
        (401, "refused"),
        (404, "refused"),
    ],
)
def test_what_an_answer_means(code: int, meaning: str) -> None:
    assert verdict(code) == meaning


def test_delivery_ids_are_stable_per_webhook_and_event() -> None:
    a = delivery_id("wh_1", "run-1", 7)
    assert a == delivery_id("wh_1", "run-1", 7)
    assert len({a, delivery_id("wh_2", "run-1", 7), delivery_id("wh_1", "run-1", 8)}) == 3
    assert a.startswith("msg_") and len(a) <= 64


def test_event_names_given_by_a_person() -> None:
    assert parse_events(["run.finished", "run.finished"]) == [WebhookEvent.RUN_FINISHED]
    with pytest.raises(ValueError, match=r"unknown webhook event 'run\.done'"):
        parse_events(["run.done"])
    with pytest.raises(ValueError, match="at least one"):
        parse_events([])


def test_the_default_schedule_retries_for_about_an_hour_and_is_bounded() -> None:
    deadline = delivery_deadline(WebhookDeliveryInput(delivery_id="d"))
    assert timedelta(minutes=40) < deadline < timedelta(hours=2)
    short = delivery_deadline(
        WebhookDeliveryInput(delivery_id="d", initial_interval_s=0.1, max_attempts=3)
    )
    assert short < timedelta(minutes=4)


def test_the_readmes_verify_snippet_accepts_our_signature_and_refuses_a_tampered_body() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    webhooks = readme.split("## Webhooks", 1)[1].split("\n## ", 1)[0]
    snippet = webhooks.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict[str, Any] = {}
    exec(snippet, scope)
    secret, now = new_secret(), int(time.time())
    body = b'{"type":"run.finished"}'
    headers = _headers(sign(secret, "msg_1", now, body), "msg_1", now)
    headers = {k.lower(): v for k, v in headers.items()}
    scope["verify"](secret, headers, body)
    with pytest.raises(ValueError, match="not a genuine"):
        scope["verify"](secret, headers, body + b" ")
