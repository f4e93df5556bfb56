from django.utils.functional import SimpleLazyObject

from accounts.selectors import account_for_user


def console(request):
    """The signed-in user's account, for the console's top bar (looked up only if used)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"console_account": None}
    return {"console_account": SimpleLazyObject(lambda: account_for_user(user=user))}
