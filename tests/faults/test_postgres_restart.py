"""PostgreSQL restarts under load: requests that cannot be served fail fast in the
OpenAI error shape, nothing is left half written, and the same gateway process serves
again once the database is back."""

import collections
import json
import subprocess
import sys
import time

import httpx
import pytest

from tests.support.load import Load, send
from tests.support.procs import ROOT, Gateway, PrivateCluster, Worker, environment, manage
from tests.support.waiting import wait_for

SEED = """
import json, sys
import django
django.setup()
from tests.support.factories import AccountFactory, ApiKeyFactory, ChannelFactory, ModelPriceFactory
group = ModelPriceFactory(model="gpt-4o-mini").group
account = AccountFactory(price_group=group, credit=50_000_000)
key = ApiKeyFactory(account=account)
ChannelFactory(base_url=sys.argv[1], served_models=["gpt-4o-mini"])
print(json.dumps({"secret": key.secret, "account": account.id}))
"""


@pytest.fixture
def cluster():
    try:
        cluster = PrivateCluster()
    except RuntimeError as exc:
        pytest.skip(f"no private PostgreSQL cluster possible here: {exc}")
    try:
        cluster.init()
    except (subprocess.SubprocessError, OSError) as exc:
        cluster.destroy()
        pytest.skip(f"initdb/pg_ctl could not run here: {exc}")
    try:
        yield cluster
    finally:
        cluster.destroy()


def test_postgres_restart_under_load_fails_cleanly_and_recovers(
    cluster, private_redis, upstream, tmp_path
):
    env = environment(
        database_url=cluster.url,
        redis_url=private_redis.url,
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    migrated = manage(env, "migrate", "--noinput", "-v", "0")
    assert migrated.returncode == 0, migrated.stderr
    seeded = subprocess.run(
        [sys.executable, "-c", SEED, upstream.base_url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    seed = json.loads(seeded.stdout.strip().splitlines()[-1])
    gateway = Gateway(env, tmp_path / "gateway.log")
    worker = Worker(env, tmp_path / "worker.log")
    try:
        gateway.start()
        worker.start()
        with Load(gateway.url, seed["secret"], prefix="pg") as load:
            time.sleep(1.0)
            restart_began = time.monotonic()
            cluster.restart()
            restarted = time.monotonic()
            time.sleep(4.0)
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            after = [send(http, seed["secret"], f"after-{i}", stream=i % 2 == 0) for i in range(10)]

        # Every request ended: served whole, or refused in the OpenAI error shape.
        assert max(r.elapsed for r in load.results) < 10
        failures = [r for r in load.results if not r.completed]
        for failure in failures:
            assert failure.status is not None and failure.status >= 500, failure
            assert failure.error is not None, failure
            assert {"message", "type", "code"} <= set(failure.error), failure
            assert failure.request_id in failure.error["message"], failure
        # The restart hit requests in flight: some failed, or some waited it out to
        # write their usage record (the gateway logs each wait).
        waited = "retrying the usage record" in (tmp_path / "gateway.log").read_text()
        assert failures or waited, "the restart went unnoticed; the test proves nothing"
        # The same gateway process serves again once the database is back.
        late = [r for r in load.results if r.started > restarted + 1.0]
        assert late and all(r.completed for r in late), [r for r in late if not r.completed]
        assert all(r.completed for r in after), after
        assert len(load.between(restart_began - 1.0, restart_began)) > 0

        # Everything recorded is settled by the worker without help.
        wait_for(
            lambda: (
                cluster.sql("SELECT count(*) FROM usage_usagerecord WHERE settled_at IS NULL")[0][0]
                == 0
            ),
            timeout=45,
        )
    finally:
        gateway.stop()
        worker.stop()

    # Each upstream call has exactly one usage record; each completed answer has one.
    served = collections.Counter(
        r["json"]["messages"][0]["content"].removeprefix("marker ") for r in upstream.requests
    )
    records = collections.Counter(
        rid for (rid,) in cluster.sql("SELECT request_id FROM usage_usagerecord")
    )
    assert set(served.values()) == {1}
    assert {rid: records[rid] for rid in served} == served
    assert {r.request_id for r in load.results + after if r.completed} <= set(records)

    # A hold whose request never got as far as a usage record is released by the sweep,
    # and only those.
    orphans = cluster.sql(
        "SELECT count(*) FROM billing_hold h WHERE h.status = 'open' AND NOT EXISTS"
        " (SELECT 1 FROM usage_usagerecord u WHERE u.hold_id = h.id)"
    )[0][0]
    swept = manage(
        env,
        "shell",
        "-c",
        "from billing.services import holds_expire; print(holds_expire(ttl_seconds=0))",
    )
    assert swept.returncode == 0, swept.stderr
    assert int(swept.stdout.split()[-1]) == orphans
    assert cluster.sql("SELECT count(*) FROM billing_hold WHERE status = 'open'") == [(0,)]

    check = manage(env, "ledger_check")
    assert check.returncode == 0, check.stderr


STAFF_SEED = """
import json, sys
import django
django.setup()
from rest_framework.authtoken.models import Token
from tests.support.factories import AccountFactory, ApiKeyFactory, ModelPriceFactory, UserFactory
group = ModelPriceFactory(model="gpt-4o-mini").group
key = ApiKeyFactory(account=AccountFactory(price_group=group, credit=1_000_000))
token = Token.objects.create(user=UserFactory(is_staff=True, is_superuser=True))
print(json.dumps({"secret": key.secret, "token": token.key}))
"""


def test_with_postgres_refusing_connections_every_machine_answer_is_json(
    cluster, private_redis, tmp_path
):
    env = environment(database_url=cluster.url, redis_url=private_redis.url)
    assert manage(env, "migrate", "--noinput", "-v", "0").returncode == 0
    seeded = subprocess.run(
        [sys.executable, "-c", STAFF_SEED], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert seeded.returncode == 0, seeded.stderr
    seed = json.loads(seeded.stdout.strip().splitlines()[-1])
    gateway = Gateway(env, tmp_path / "gateway.log").start()
    try:
        cluster.stop()
        with httpx.Client(base_url=gateway.url, timeout=20) as http:
            token = {"authorization": f"Token {seed['token']}"}
            for path in ["/api/accounts/", "/api/usage/", "/api/ledger/", "/api/keys/"]:
                response = http.get(path, headers=token)
                assert response.status_code == 503, (path, response.text)
                assert response.headers["content-type"] == "application/json", path
                assert response.json()["detail"] and response.headers["retry-after"], path
            login = http.post("/api/auth/token/", json={"username": "x", "password": "y"})
            assert login.status_code == 503 and login.json()["detail"], login.text

            key = {"authorization": f"Bearer {seed['secret']}"}
            for method, path, body in [
                ("POST", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": []}),
                ("GET", "/v1/models", None),
            ]:
                response = http.request(method, path, headers=key, json=body)
                assert response.status_code == 503, (path, response.text)
                error = response.json()["error"]
                assert error["code"] == "service_unavailable", (path, error)
    finally:
        gateway.stop()
        cluster.start()
