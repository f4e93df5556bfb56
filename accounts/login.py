"""Sign-in throttling for the console and the admin.

Failed attempts are counted per username and per client address in the Django cache
(Redis in production, so every web process sees the same counts). Past the limit
within the window, that username or address is refused for a cool-down without
checking the password at all, so guessing costs the attacker time, not us CPU.
A successful sign-in clears its username's count; the address's count is left to
expire, or one valid account would let an address reset its own limit.
"""

import hashlib
import math
import time
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache
from django.http import HttpRequest

_PREFIX = "login-throttle"


def _keys(request: HttpRequest | None, username: str) -> list[str]:
    # Hashed: usernames are user input and must not shape cache keys.
    name = hashlib.sha256(username.strip().lower().encode()).hexdigest()
    keys = [f"{_PREFIX}:user:{name}"]
    address = request.META.get("REMOTE_ADDR") if request is not None else None
    if address:
        keys.append(f"{_PREFIX}:ip:{address}")
    return keys


def _limit(key: str) -> int:
    rules = settings.LOGIN_THROTTLE
    return rules["FAILURES_PER_USERNAME"] if ":user:" in key else rules["FAILURES_PER_IP"]


def login_locked_for(request: HttpRequest | None, username: str) -> int:
    """Seconds until sign-in is allowed again for this username and address (0: now)."""
    now = time.time()
    until = [cache.get(f"{key}:locked", 0) for key in _keys(request, username)]
    return max(0, math.ceil(max(until) - now))


def login_failed(request: HttpRequest | None, username: str) -> None:
    rules = settings.LOGIN_THROTTLE
    for key in _keys(request, username):
        cache.add(key, 0, timeout=rules["WINDOW_SECONDS"])
        try:
            count = cache.incr(key)
        except ValueError:  # expired between the two calls
            cache.set(key, 1, timeout=rules["WINDOW_SECONDS"])
            count = 1
        if count >= _limit(key):
            cooldown = rules["COOLDOWN_SECONDS"]
            # The value is when the lock ends, to tell the user how long to wait.
            cache.set(f"{key}:locked", time.time() + cooldown, timeout=cooldown)
            cache.delete(key)


def login_succeeded(request: HttpRequest | None, username: str) -> None:
    cache.delete(_keys(request, username)[0])


class ThrottledLoginMixin:
    """For an ``AuthenticationForm``: refuse while locked out, count failures."""

    request: HttpRequest | None
    error_messages: dict[str, Any]

    def clean(self):
        username = self.cleaned_data.get("username") or ""  # type: ignore[attr-defined]
        wait = login_locked_for(self.request, username)
        if wait:
            raise forms.ValidationError(
                self.error_messages["throttled"],
                code="throttled",
                params={"minutes": max(1, math.ceil(wait / 60))},
            )
        try:
            cleaned = super().clean()  # type: ignore[misc]
        except forms.ValidationError as exc:
            if getattr(exc, "code", None) == "invalid_login":
                login_failed(self.request, username)
            raise
        login_succeeded(self.request, username)
        return cleaned


_THROTTLED = (
    "Too many failed sign-in attempts. Try again in %(minutes)s minute(s), "
    "or ask an administrator to reset your password."
)


class ThrottledAuthenticationForm(ThrottledLoginMixin, AuthenticationForm):
    error_messages = {**AuthenticationForm.error_messages, "throttled": _THROTTLED}


class ThrottledAdminAuthenticationForm(ThrottledLoginMixin, AdminAuthenticationForm):
    error_messages = {**AdminAuthenticationForm.error_messages, "throttled": _THROTTLED}
