"""Who may see what through the management API: staff see everything (and may
narrow lists with ``?account=``); anyone else sees only the account they belong to."""

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import BasePermission
from rest_framework.request import Request


class IsStaff(BasePermission):
    message = "Only staff may do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.is_staff)


class StaffWrites(BasePermission):
    """Members read their own account's objects; only staff change anything."""

    message = "Only staff may do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        return request.method in ("GET", "HEAD", "OPTIONS") or bool(request.user.is_staff)


def member_account_id(user: Any) -> int | None:
    membership = getattr(user, "membership", None)
    return membership.account_id if membership is not None else None


ACCOUNT_FILTER = OpenApiParameter(
    "account", OpenApiTypes.INT, description="Staff only: narrow the list to one account."
)


def account_filter_param(request: Request) -> int | None:
    raw = request.query_params.get("account")
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValidationError({"account": "A valid integer is required."}) from None


def scope_to_user(queryset: QuerySet, *, request: Request, field: str = "account") -> QuerySet:
    """``queryset`` narrowed to what ``request.user`` may see: everything for staff
    (or the one ``?account=``), the member's own account's rows for anyone else."""
    user = request.user
    if user.is_staff:
        account_id = account_filter_param(request)
        if account_id is not None:
            queryset = queryset.filter(**{f"{field}_id": account_id})
        return queryset
    own = member_account_id(user)
    if own is None:
        return queryset.none()
    return queryset.filter(**{f"{field}_id": own})


def account_ids_for(request: Request) -> list[int] | None:
    """Accounts whose data the user may read: None means all (staff, no filter)."""
    if request.user.is_staff:
        account_id = account_filter_param(request)
        return None if account_id is None else [account_id]
    own = member_account_id(request.user)
    return [] if own is None else [own]
