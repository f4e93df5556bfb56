import pytest
from django.conf import settings

from tests.support.procs import PrivateRedis


def test_database_url() -> str:
    """The test database, for processes that share it with the test."""
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


test_database_url.__test__ = False  # type: ignore[attr-defined]


@pytest.fixture
def private_redis():
    server = PrivateRedis().start()
    try:
        yield server
    finally:
        server.kill()


# The relay's own environment (in-process gateway, loopback upstream, Celery worker).
from tests.relay.conftest import relay_env  # noqa: E402, F401
