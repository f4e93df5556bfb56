import pytest
import redis
from django.conf import settings
from django.db import connection

from config import celery_app
from core.localcache import clear_all

from .support.servers import ServerThread
from .support.upstreams import FakeAnthropic, FakeUpstream


def pytest_configure(config):
    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        raise pytest.UsageError(
            "The tests run against PostgreSQL and Redis: use `bash scripts/test` "
            "(or set DATABASE_URL and REDIS_URL)."
        )


@pytest.fixture(autouse=True)
def _fresh_state():
    """Each test starts with empty per-process caches and an empty Redis database."""
    from core import shared
    from relay import health

    clear_all()
    health.reset_local()
    shared.reset()
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    yield
    clear_all()
    health.reset_local()


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
