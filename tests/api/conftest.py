import pytest


@pytest.fixture(autouse=True)
def _fast_passwords(fast_passwords):
    """Every test here makes a few users."""
