"""The in-flight registry's two backends (Redis in production, files in the embedded
run) answer the same sequence of writes the same way."""

import time

import pytest

from core.inflight import FileBackend, RedisBackend


@pytest.fixture(params=["redis", "files"])
def store(request, tmp_path):
    return RedisBackend() if request.param == "redis" else FileBackend(tmp_path / "inflight")


def test_backends_agree(store):
    assert store.read() == set()
    store.write("web-a:1", [1, 2], 30)
    store.write("web-b:7", [3], 1)
    assert store.read() == {1, 2, 3}
    store.write("web-a:1", [2], 30)  # request 1 ended
    assert store.read() == {2, 3}
    time.sleep(1.1)  # web-b stopped writing: it no longer vouches for its holds
    assert store.read() == {2}
    store.write("web-a:1", [], 30)
    assert store.read() == set()
