"""Management API: tokens, accounts (balance, credits, redemption, members) and API keys.

Staff see and manage everything. Anyone else sees only the account they are a
member of: another account's objects are simply not found (404) and lists are
filtered, so nothing reveals that they exist.
"""

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle

from core.access import (
    ACCOUNT_FILTER,
    IsStaff,
    StaffWrites,
    member_account_id,
    scope_to_user,
)

from .models import Account, ApiKey, Membership
from .serializers import (
    AccountSerializer,
    ApiKeyCreatedSerializer,
    ApiKeyCreateSerializer,
    ApiKeyPolicySerializer,
    ApiKeySerializer,
    BalanceSerializer,
    MembershipSerializer,
)
from .services import (
    KeyPolicyError,
    api_key_create,
    api_key_revoke,
    api_key_update,
    membership_add,
)

# -- tokens --------------------------------------------------------------------------


class TokenThrottle(AnonRateThrottle):
    # Per client address: slows password guessing without bothering real users.
    rate = "20/min"


class ObtainTokenView(ObtainAuthToken):
    authentication_classes = ()
    throttle_classes = (TokenThrottle,)

    @extend_schema(
        summary="Exchange a username and password for an API token",
        description='Send the token as "Authorization: Token <token>" on every other call.',
        request=AuthTokenSerializer,
        responses=inline_serializer("TokenResponse", {"token": serializers.CharField()}),
        tags=["auth"],
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().post(request, *args, **kwargs)


# -- accounts ------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="List accounts (a member sees their own only)"),
    retrieve=extend_schema(summary="An account"),
    create=extend_schema(summary="Create an account with its ledger account (staff)"),
    update=extend_schema(summary="Replace an account's settings (staff)"),
    partial_update=extend_schema(summary="Change an account's settings (staff)"),
)
class AccountViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Billing tenants. ``balance`` and ``held`` are read-only: money moves only through
    the ledger (credits, redemption codes, usage)."""

    serializer_class = AccountSerializer
    queryset = Account.objects.order_by("pk")

    def get_permissions(self) -> list[BasePermission]:
        return [*super().get_permissions(), StaffWrites()]

    def get_queryset(self) -> QuerySet[Account]:
        queryset = self.queryset
        if self.request.user.is_staff:
            return queryset
        own = member_account_id(self.request.user)
        return queryset.filter(pk=own) if own is not None else queryset.none()

    @extend_schema(summary="Balance, held and available", responses=BalanceSerializer)
    @action(detail=True, methods=["get"])
    def balance(self, request: Request, pk: str | None = None) -> Response:
        return Response(BalanceSerializer(self.get_object()).data)

    @extend_schema(
        methods=["GET"],
        summary="The account's members (staff)",
        responses=MembershipSerializer(many=True),
    )
    @extend_schema(
        methods=["POST"],
        summary="Add a user to the account (staff)",
        request=MembershipSerializer,
        responses={201: MembershipSerializer},
    )
    # The list is short and answered whole; without this the schema promises a page.
    @action(
        detail=True, methods=["get", "post"], permission_classes=[IsStaff], pagination_class=None
    )
    def members(self, request: Request, pk: str | None = None) -> Response:
        account = self.get_object()
        if request.method == "GET":
            memberships = account.memberships.select_related("user").order_by("pk")
            return Response(MembershipSerializer(memberships, many=True).data)
        params = MembershipSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        try:
            with transaction.atomic():
                membership = membership_add(
                    account=account,
                    user=params.validated_data["user"],
                    role=params.validated_data.get("role", Membership.Role.MEMBER),
                )
        except IntegrityError as exc:
            # Added elsewhere between the check and the insert: one account per user.
            raise ValidationError(
                {"username": ["This user already belongs to an account."]}
            ) from exc
        return Response(MembershipSerializer(membership).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Remove a member from the account (staff)",
        parameters=[OpenApiParameter("member_id", OpenApiTypes.INT, OpenApiParameter.PATH)],
        request=None,
        responses={204: None},
    )
    @action(
        detail=True,
        methods=["delete"],
        url_path=r"members/(?P<member_id>\d+)",
        permission_classes=[IsStaff],
    )
    def member_remove(
        self, request: Request, pk: str | None = None, member_id: str = ""
    ) -> Response:
        account = self.get_object()
        get_object_or_404(Membership, pk=member_id, account=account).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


# -- API keys ------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="List API keys", parameters=[ACCOUNT_FILTER]),
    retrieve=extend_schema(summary="An API key (never its secret)"),
)
class ApiKeyViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Keys for ``/v1/*``. The secret is returned once, by the create call; afterwards
    only its prefix is shown. Spend limits are integer micro-USD."""

    serializer_class = ApiKeySerializer
    queryset = ApiKey.objects.select_related("created_by").order_by("-pk")
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self) -> QuerySet[ApiKey]:
        return scope_to_user(self.queryset, request=self.request)

    @extend_schema(
        summary="Create a key; the response carries its secret, once",
        request=ApiKeyCreateSerializer,
        responses={201: ApiKeyCreatedSerializer},
    )
    def create(self, request: Request) -> Response:
        params = ApiKeyCreateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = dict(params.validated_data)
        account = data.pop("account", None)
        if request.user.is_staff:
            if account is None:
                raise ValidationError({"account": "Staff must say which account the key is for."})
        else:
            own = member_account_id(request.user)
            if own is None:
                raise PermissionDenied("You are not a member of any account.")
            if account is not None and account.pk != own:
                raise ValidationError({"account": "Keys can only be made for your own account."})
            account = Account.objects.get(pk=own)
        try:
            api_key, secret = api_key_create(
                account=account,
                created_by=request.user,  # type: ignore[arg-type]
                **data,
            )
        except KeyPolicyError as exc:
            raise ValidationError(exc.errors) from None
        context = {**self.get_serializer_context(), "secret": secret}
        return Response(
            ApiKeyCreatedSerializer(api_key, context=context).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        summary="Change a key's name, expiry, allowed models, IP allowlist or limits",
        request=ApiKeyPolicySerializer(partial=True),
        responses=ApiKeySerializer,
    )
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        api_key = self.get_object()
        params = ApiKeyPolicySerializer(data=request.data, partial=True)
        params.is_valid(raise_exception=True)
        changes = params.validated_data
        for name, value in changes.items():
            if name == "allowed_models":
                value = sorted(set(value))
            setattr(api_key, name, value)
        try:
            api_key_update(api_key=api_key, fields=list(changes))
        except KeyPolicyError as exc:
            raise ValidationError(exc.errors) from None
        return Response(self.get_serializer(api_key).data)

    @extend_schema(summary="Revoke a key, at once and for good", request=None)
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str | None = None) -> Response:
        api_key = api_key_revoke(api_key=self.get_object())
        return Response(self.get_serializer(api_key).data)
