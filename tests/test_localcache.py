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
