from tests.relay.conftest import relay_env  # noqa: F401 - the same gateway set-up as the relay tests
