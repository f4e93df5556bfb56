"""The hardening tests reuse the live relay of tests/relay and the two-account world
of tests/api."""

from tests.api.conftest import _fast_passwords, world  # noqa: F401 - shared fixtures
from tests.relay.conftest import relay_env  # noqa: F401 - a shared fixture
