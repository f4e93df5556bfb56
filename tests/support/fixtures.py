"""Fixtures shared by the test folders, registered once as a plugin by tests/conftest.py:
Tollgate served on a loopback port, the fake upstreams, a real Celery worker, the
relay's environment (``relay_env``) and the management API's two-account ``world``."""

from decimal import Decimal

import httpx
import openai
import pytest
import redis
from django.conf import settings
from django.db import connection

from accounts.services import membership_add
from config import celery_app
from tests.support.api import World, client_for
from tests.support.factories import (
    AccountFactory,
    ApiKeyFactory,
    ChannelFactory,
    ModelPriceFactory,
    PriceGroupFactory,
    UserFactory,
)
from tests.support.media import MEDIA_PRICES, FakeCohere, FakeMedia, MediaEnv
from tests.support.relay import RelayEnv, settle_in_flight
from tests.support.servers import ServerThread
from tests.support.upstreams import FakeAnthropic, FakeUpstream


@pytest.fixture(scope="session")
def tollgate_server(django_db_setup, django_db_blocker):
    """Tollgate's ASGI app served by uvicorn on a loopback port."""
    from config.asgi import application

    server = ServerThread(application).start()
    yield server
    server.stop()
    with django_db_blocker.unblock():
        # The server's worker threads hold their own connections to the test
        # database; close them so it can be dropped.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


@pytest.fixture(scope="session")
def _upstream_server():
    fake = FakeUpstream()
    server = ServerThread(fake).start()
    fake.base_url = f"{server.url}/v1"
    yield fake
    server.stop()


@pytest.fixture
def upstream(_upstream_server):
    """A loopback OpenAI-compatible upstream, reset for each test."""
    _upstream_server.reset()
    return _upstream_server


@pytest.fixture(scope="session")
def _server_pool():
    servers = []

    def start(fake):
        server = ServerThread(fake).start()
        fake.base_url = f"{server.url}/v1"
        fake.root_url = server.url
        servers.append(server)
        return fake

    pool = {
        "openai": [start(FakeUpstream()) for _ in range(3)],
        "anthropic": [start(FakeAnthropic())],
    }
    yield pool
    for server in servers:
        server.stop()


@pytest.fixture
def more_upstreams(_server_pool):
    """Three more OpenAI-compatible loopback upstreams, each scriptable on its own."""
    for fake in _server_pool["openai"]:
        fake.reset()
    return _server_pool["openai"]


@pytest.fixture
def anthropic_upstream(_server_pool):
    """A loopback upstream speaking the Anthropic Messages API."""
    fake = _server_pool["anthropic"][0]
    fake.reset()
    return fake


@pytest.fixture(scope="session")
def celery_worker_thread(django_db_setup, django_db_blocker):
    """A real Celery worker consuming from the real Redis broker, in a thread."""
    from celery.contrib.testing.worker import start_worker

    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    with django_db_blocker.unblock():
        with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            yield


@pytest.fixture
def relay_env(transactional_db, tollgate_server, upstream, celery_worker_thread):
    """The gateway served live with a loopback upstream and a Celery worker, an account
    with a key, and a channel to the upstream serving two priced models."""
    group = ModelPriceFactory(
        model="gpt-4o-mini", input_per_m=Decimal("0.15"), output_per_m=Decimal("0.60")
    ).group
    ModelPriceFactory(
        group=group,
        model="o4-mini",
        input_per_m=Decimal("1.10"),
        output_per_m=Decimal("4.40"),
        cache_read_per_m=Decimal("0.275"),
        reasoning_per_m=Decimal("8.80"),
    )
    account = AccountFactory(price_group=group, credit=5_000_000)
    key = ApiKeyFactory(account=account)
    channel = ChannelFactory(
        base_url=upstream.base_url,
        served_models=["gpt-4o-mini", "o4-mini"],
        api_key="sk-upstream-secret-abcdef123456",
    )
    with httpx.Client(base_url=tollgate_server.url, timeout=30) as http:
        yield RelayEnv(
            group=group,
            account=account,
            key=key,
            channel=channel,
            url=tollgate_server.url,
            http=http,
        )
    settle_in_flight()


@pytest.fixture(scope="session")
def _media_servers():
    servers = []

    def start(fake):
        server = ServerThread(fake).start()
        fake.base_url = f"{server.url}/v1"
        fake.root_url = server.url
        servers.append(server)
        return fake

    pool = {"media": [start(FakeMedia()), start(FakeMedia())], "cohere": start(FakeCohere())}
    yield pool
    for server in servers:
        server.stop()


@pytest.fixture
def media_upstreams(_media_servers):
    """Two loopback upstreams speaking OpenAI's media endpoints (and Jina's rerank), and
    one speaking Cohere's v2 rerank, each reset for the test."""
    for fake in (*_media_servers["media"], _media_servers["cohere"]):
        fake.reset()
    return _media_servers


@pytest.fixture
def media_env(relay_env, media_upstreams):
    """``relay_env`` with the media models priced in its group (``MEDIA_PRICES``) and an
    OpenAI-compatible channel to a FakeMedia serving them; the official OpenAI client
    on the key."""
    for model, (mode, components) in MEDIA_PRICES.items():
        ModelPriceFactory(group=relay_env.group, model=model, components=components, mode=mode)
    fake = media_upstreams["media"][0]
    channel = ChannelFactory(
        name="media",
        base_url=fake.base_url,
        served_models=sorted(MEDIA_PRICES),
        api_key="sk-upstream-media-abcdef123456",
    )
    with openai.OpenAI(
        base_url=f"{relay_env.url}/v1", api_key=relay_env.key.secret, max_retries=0, timeout=30
    ) as client:
        yield MediaEnv(
            group=relay_env.group,
            account=relay_env.account,
            key=relay_env.key,
            channel=channel,
            upstream=fake,
            cohere=media_upstreams["cohere"],
            url=relay_env.url,
            http=relay_env.http,
            client=client,
        )


@pytest.fixture
def world(db) -> World:
    """Two customer accounts (A with alice, B with bob), a member of staff and a user
    with no account, each with a real API token."""
    group_a = ModelPriceFactory(
        model="gpt-4o-mini", input_per_m=Decimal("0.15"), output_per_m=Decimal("0.60")
    ).group
    group_b = PriceGroupFactory(name="partners")
    ModelPriceFactory(group=group_b, model="o4-mini", input_per_m=Decimal("1.10"))
    a = AccountFactory(name="Acme", price_group=group_a, credit=5_000_000)
    b = AccountFactory(name="Globex", price_group=group_b, credit=7_000_000)
    alice_user = UserFactory(username="alice")
    bob_user = UserFactory(username="bob")
    staff_user = UserFactory(username="ops", is_staff=True)
    membership_add(account=a, user=alice_user)
    membership_add(account=b, user=bob_user)
    return World(
        group_a=group_a,
        group_b=group_b,
        a=a,
        b=b,
        key_a=ApiKeyFactory(account=a, name="alice's key"),
        key_b=ApiKeyFactory(account=b, name="bob's key"),
        alice=client_for(alice_user),
        bob=client_for(bob_user),
        staff=client_for(staff_user),
        nobody=client_for(UserFactory(username="drifter")),
        anon=client_for(None),
        alice_user=alice_user,
        bob_user=bob_user,
        staff_user=staff_user,
    )


@pytest.fixture
def fast_passwords(settings):
    """A fast password hasher, for tests that make a few users: the production hasher is
    slow on purpose. The folders that want it everywhere ask for it from an autouse
    fixture in their conftest."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
