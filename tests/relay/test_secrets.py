"""Upstream keys (and customers' keys) never leave the gateway: not in logs, errors,
admin pages or API output."""

import logging

import pytest
from django.test import Client

from relay.models import Channel
from relay.selectors import channel_cache_invalidate
from tests.support.factories import ChannelFactory
from tests.support.relay import chat
from tests.support.waiting import wait_for
from usage.models import UsageRecord

UPSTREAM_SECRET = "sk-upstream-secret-abcdef123456"


def test_upstream_key_is_encrypted_at_rest(relay_env):
    stored = (
        Channel.objects.filter(pk=relay_env.channel.pk)
        .values_list("api_key_encrypted", flat=True)
        .get()
    )
    assert UPSTREAM_SECRET not in stored and stored
    assert Channel.objects.get(pk=relay_env.channel.pk).api_key == UPSTREAM_SECRET


def test_no_secret_in_logs_errors_or_output(relay_env, upstream, caplog, django_user_model):
    caplog.set_level(logging.DEBUG)
    seen = []
    upstream.then(status=400, message=f"bad request for key {UPSTREAM_SECRET}")
    upstream.then(status=500, message=f"internal error, key={UPSTREAM_SECRET}")
    upstream.then(status=401, message=f"Incorrect API key provided: {UPSTREAM_SECRET}")
    for _ in range(3):
        response = relay_env.post(chat())
        seen.append(response.text + str(dict(response.headers)))
    with relay_env.http.stream(
        "POST",
        "/v1/chat/completions",
        json=chat(stream=True, mock={"fail_after": 2}),
        headers={"authorization": f"Bearer {relay_env.key.secret}"},
    ) as response:
        seen.append(response.read().decode())
    seen.append(
        relay_env.http.get(
            "/v1/models", headers={"authorization": f"Bearer {relay_env.key.secret}"}
        ).text
    )
    wait_for(lambda: not UsageRecord.objects.filter(settled_at__isnull=True).exists())

    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-123456")
    browser = Client()
    browser.force_login(admin)
    for url in [
        "/admin/relay/channel/",
        f"/admin/relay/channel/{relay_env.channel.pk}/change/",
        "/admin/usage/usagerecord/",
    ]:
        seen.append(browser.get(url).content.decode())
    seen += [str(r.attempts) + r.error_code for r in UsageRecord.objects.all()]
    logs = "\n".join(record.getMessage() for record in caplog.records)

    for text in [*seen, logs]:
        assert UPSTREAM_SECRET not in text
        assert relay_env.key.secret not in text


# A key of no well-known shape: only the channel's own key can recognise it.
PLAIN_SECRET = "AIzaSyD0upstream9Key8Of7No6Shape5xyz"


def _planted(secret: str) -> dict:
    """An upstream error with the key in every field, and in part (as upstreams echo
    a refused key: the first and last characters)."""
    partial = f"{secret[:8]}...{secret[-8:]}"
    return {
        "error": {
            "message": f"Incorrect API key provided: {secret} ({partial})",
            "type": f"invalid_request_error {secret}",
            "param": f"api_key={secret}",
            "code": f"key_{secret}",
            "detail": {"key": secret},
        },
        "type": "error",
        "key": secret,
    }


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 429, 500, 503])
@pytest.mark.parametrize("channel_type", ["openai", "anthropic"])
@pytest.mark.parametrize("endpoint", ["/v1/chat/completions", "/v1/messages"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_key_an_upstream_echoes_in_any_field_never_reaches_the_caller(
    relay_env, upstream, anthropic_upstream, status, channel_type, endpoint, stream
):
    fake = upstream if channel_type == "openai" else anthropic_upstream
    base_url = upstream.base_url if channel_type == "openai" else anthropic_upstream.root_url
    Channel.objects.filter(pk=relay_env.channel.pk).update(status=Channel.Status.DISABLED)
    ChannelFactory(
        type=channel_type, base_url=base_url, served_models=["gpt-4o-mini"], api_key=PLAIN_SECRET
    )
    channel_cache_invalidate()
    for _ in range(3):  # every attempt of the failover loop gets the same answer
        fake.then(status=status, body=_planted(PLAIN_SECRET))
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 20,
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
    }
    response = relay_env.http.post(
        endpoint, json=body, headers={"authorization": f"Bearer {relay_env.key.secret}"}
    )
    assert response.status_code >= 400
    seen = response.text + str(dict(response.headers))
    assert PLAIN_SECRET[:8] not in seen and PLAIN_SECRET[-8:] not in seen, seen
    assert fake.calls >= 1
    record = wait_for(lambda: UsageRecord.objects.filter(api_key=relay_env.key).first())
    assert PLAIN_SECRET[:8] not in str(record.attempts) + record.error_code
