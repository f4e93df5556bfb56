import pytest

from tests.support.procs import PrivateRedis


@pytest.fixture
def private_redis():
    server = PrivateRedis().start()
    try:
        yield server
    finally:
        server.kill()
