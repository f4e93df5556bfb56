import pytest
import redis
from django.conf import settings

from core.localcache import clear_all

# Helpers assert too: their failures are explained like a test's own asserts.
pytest.register_assert_rewrite("tests.support")

# The fixtures several folders share (servers, upstreams, the worker, relay_env, world),
# and those of the Responses API and legacy completions.
pytest_plugins = ["tests.support.fixtures", "tests.support.responses"]


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
