"""The per-process cache never keeps a value loaded across a change."""

from core.localcache import TTLCache


def test_a_value_loaded_while_it_changed_is_returned_but_not_kept():
    cache: TTLCache[str] = TTLCache("test-race", lambda: 600.0)

    def load_then_change() -> str:
        value = "old"
        cache.invalidate("k")  # the change's invalidation arrives mid-load
        return value

    assert cache.get_or_load("k", load_then_change) == "old"
    assert cache.lookup("k") == (False, None)
    assert cache.get_or_load("k", lambda: "new") == "new"
    assert cache.lookup("k") == (True, "new")


def test_a_deployment_on_another_redis_database_does_not_drop_this_ones_cache(settings):
    import time

    import redis

    from core import invalidation

    cache: TTLCache[str] = TTLCache("test-neighbours", lambda: 600.0)
    invalidation.listening()
    assert invalidation.subscribed.wait(10)
    cache.get_or_load("k", lambda: "kept")
    here = redis.Redis.from_url(settings.REDIS_URL)
    database = here.connection_pool.connection_kwargs.get("db", 0)
    neighbour = redis.Redis.from_url(settings.REDIS_URL.rsplit("/", 1)[0] + f"/{database ^ 1}")
    try:
        # A neighbour sharing the server publishes its own change of the same entry.
        message = b'{"cache": "test-neighbours", "key": "k"}'
        neighbour.publish(invalidation.channel_of(neighbour), message)
        time.sleep(0.3)
        assert cache.lookup("k") == (True, "kept")
        # This deployment's own change still reaches it.
        invalidation.publish("test-neighbours", "k")
        deadline = time.monotonic() + 2
        while cache.lookup("k")[0] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cache.lookup("k") == (False, None)
    finally:
        here.close()
        neighbour.close()
