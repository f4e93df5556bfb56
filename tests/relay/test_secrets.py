"""Upstream keys (and customers' keys) never leave the gateway: not in logs, errors,
admin pages or API output."""

import logging

from django.test import Client

from relay.models import Channel
from tests.conftest import wait_for
from usage.models import UsageRecord

from .conftest import chat

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
