"""The hardening tests reuse the live relay of tests/relay (``relay_env``) and the
two-account ``world`` of tests/api, both shared from tests/support/fixtures.py."""

import pytest


@pytest.fixture(autouse=True)
def _fast_passwords(fast_passwords):
    """As in tests/api: every test here makes a few users."""
