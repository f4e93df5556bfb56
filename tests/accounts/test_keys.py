import pytest

from accounts.keys import KEY_PREFIX, key_generate, key_hash, key_is_well_formed
from accounts.models import ApiKey
from relay.errors import ApiError
from relay.lifecycle.auth import authenticate
from tests.support.factories import ApiKeyFactory


def test_keys_carry_a_checksum_that_catches_typos():
    key = key_generate()
    assert key.startswith(KEY_PREFIX) and key_is_well_formed(key)
    for i in range(len(KEY_PREFIX), len(key)):
        swapped = key[:i] + ("a" if key[i] != "a" else "b") + key[i + 1 :]
        assert not key_is_well_formed(swapped)
    assert not key_is_well_formed(key[:-1])
    assert len({key_generate() for _ in range(1000)}) == 1000


@pytest.mark.django_db
def test_only_a_hash_is_stored_and_the_prefix_identifies_the_key():
    key = ApiKeyFactory()
    row = ApiKey.objects.filter(pk=key.pk).values().get()
    assert key.secret not in str(row)
    assert row["key_hash"] == key_hash(key.secret)
    assert key.display.startswith(key.secret[:12]) and key.display.endswith(key.secret[-4:])


@pytest.mark.django_db
def test_malformed_keys_are_refused_without_touching_the_database(django_assert_num_queries):
    with django_assert_num_queries(0):
        for bad in ["", "sk-123", "sk-tg-" + "x" * 38, key_generate()[:-1] + "!"]:
            with pytest.raises(ApiError) as exc:
                authenticate(bad)
            assert exc.value.status == 401


@pytest.mark.django_db
def test_known_key_is_looked_up_once_then_cached(django_assert_num_queries):
    key = ApiKeyFactory()
    with django_assert_num_queries(1):
        for _ in range(5):
            assert authenticate(key.secret).id == key.id
