"""Shared plumbing of the console's views."""

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.selectors import account_for_user


def signed_in(request: HttpRequest) -> User:
    """The request's user, where sign-in is already required."""
    assert isinstance(request.user, User)
    return request.user


def member_required(view: Callable) -> Callable:
    """Sign-in required, and a member of an account; the view gets the account."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        account = account_for_user(user=request.user)
        if account is None:
            return render(request, "console/no_account.html", status=403)
        return view(request, account, *args, **kwargs)

    return wrapper
