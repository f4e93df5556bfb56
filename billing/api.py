"""Management API: price groups and prices, the ledger, redemption codes, statements."""

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Prefetch, QuerySet, Sum
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import Account
from accounts.serializers import BalanceSerializer
from core.access import (
    ACCOUNT_FILTER,
    IsStaff,
    StaffWrites,
    member_account_id,
    scope_to_user,
)

from .models import Entry, ModelPrice, PriceGroup, RedemptionCode, Statement, Transaction
from .selectors import price_cache_invalidate, prices_current
from .serializers import (
    CreditSerializer,
    LedgerTransactionSerializer,
    ModelPriceSerializer,
    PriceGroupSerializer,
    RedeemSerializer,
    RedemptionCodeCreateSerializer,
    RedemptionCodesCreatedSerializer,
    RedemptionCodeSerializer,
    StatementGenerateSerializer,
    StatementSerializer,
)
from .services import (
    LedgerError,
    RedemptionError,
    account_adjust,
    account_credit,
    model_price_set,
    redemption_codes_create,
    redemption_redeem,
)
from .statements import statement_generate


def _own_group_id(request: Request) -> int | None:
    account_id = member_account_id(request.user)
    if account_id is None:
        return None
    return request.user.membership.account.price_group_id  # type: ignore[union-attr]


@extend_schema_view(
    list=extend_schema(summary="Price groups (a member sees their own group)"),
    retrieve=extend_schema(summary="A price group"),
    create=extend_schema(summary="Create a price group (staff)"),
    update=extend_schema(summary="Rename a price group or change its multiplier (staff)"),
    partial_update=extend_schema(summary="Rename a price group or change its multiplier (staff)"),
)
class PriceGroupViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = PriceGroupSerializer
    queryset = PriceGroup.objects.order_by("pk")

    def get_permissions(self) -> list[Any]:
        return [*super().get_permissions(), StaffWrites()]

    def get_queryset(self) -> QuerySet[PriceGroup]:
        if self.request.user.is_staff:
            return self.queryset
        group_id = _own_group_id(self.request)
        return self.queryset.filter(pk=group_id) if group_id else self.queryset.none()

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        super().perform_update(serializer)
        # The multiplier is part of every price of the group.
        price_cache_invalidate(group_id=serializer.instance.pk)


_PRICE_FILTERS = [
    OpenApiParameter("group", OpenApiTypes.INT, description="Staff only: one price group."),
    OpenApiParameter("model", OpenApiTypes.STR, description="Staff only: one model."),
    OpenApiParameter(
        "current",
        OpenApiTypes.BOOL,
        description="Staff only: just the versions in effect now. Members always get those.",
    ),
]


def _current_price_ids(group_ids: list[int]) -> list[int]:
    return [
        price.price_id
        for group_id in group_ids
        for price in prices_current(group_id=group_id).values()
        if price.price_id is not None
    ]


@extend_schema_view(
    list=extend_schema(
        summary="Price versions",
        description="Staff see every version of every group. A member sees the prices in "
        "effect now for their own account's group.",
        parameters=_PRICE_FILTERS,
    ),
    retrieve=extend_schema(summary="A price version"),
    create=extend_schema(
        summary="Publish a new price version (staff)",
        description="Prices are versioned, never edited: this adds a version that applies "
        "from effective_from (default now). Requests already made keep their price.",
    ),
)
class ModelPriceViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = ModelPriceSerializer
    queryset = ModelPrice.objects.prefetch_related("components").order_by(
        "group_id", "model", "-effective_from", "-pk"
    )

    def get_permissions(self) -> list[Any]:
        return [*super().get_permissions(), StaffWrites()]

    def get_queryset(self) -> QuerySet[ModelPrice]:
        queryset = self.queryset
        if not self.request.user.is_staff:
            group_id = _own_group_id(self.request)
            if group_id is None:
                return queryset.none()
            return queryset.filter(pk__in=_current_price_ids([group_id]))
        if self.action != "list":
            return queryset
        params = self.request.query_params
        group = params.get("group")
        if group:
            if not group.isdigit():
                raise ValidationError({"group": "A valid integer is required."})
            queryset = queryset.filter(group_id=int(group))
        if params.get("model"):
            queryset = queryset.filter(model=params["model"])
        if params.get("current", "").lower() in ("1", "true", "yes"):
            group_ids = (
                [int(group)] if group else list(PriceGroup.objects.values_list("pk", flat=True))
            )
            queryset = queryset.filter(pk__in=_current_price_ids(group_ids))
        return queryset

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        data = dict(serializer.validated_data)
        group = data.pop("group")
        try:
            with transaction.atomic():
                serializer.instance = model_price_set(group_id=group.pk, **data)
        except IntegrityError as exc:
            raise ValidationError(
                {"effective_from": "This model already has a version starting at that moment."}
            ) from exc


@extend_schema_view(
    list=extend_schema(summary="Redemption codes (never the codes themselves)"),
    retrieve=extend_schema(summary="A redemption code"),
)
class RedemptionCodeViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Staff only. Codes are hashed; the plaintext is returned once, when they are made."""

    serializer_class = RedemptionCodeSerializer
    queryset = RedemptionCode.objects.select_related("created_by").order_by("-pk")
    permission_classes = [IsStaff]

    @extend_schema(
        summary="Make codes; the response carries them, once",
        request=RedemptionCodeCreateSerializer,
        responses={201: RedemptionCodesCreatedSerializer},
    )
    def create(self, request: Request) -> Response:
        params = RedemptionCodeCreateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        try:
            # All the codes or none: a code made but never shown could not be handed out.
            with transaction.atomic():
                codes = redemption_codes_create(
                    amount=data["amount"],
                    count=data["count"],
                    memo=data["memo"],
                    expires_at=data["expires_at"],
                    created_by=request.user,  # type: ignore[arg-type]
                )
        except LedgerError as exc:
            raise ValidationError({"detail": str(exc)}) from exc
        body = RedemptionCodesCreatedSerializer({**data, "codes": codes}).data
        return Response(body, status=status.HTTP_201_CREATED)


class LedgerPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size_query_param = "limit"
    max_page_size = 500


@extend_schema_view(
    list=extend_schema(
        summary="Ledger transactions, newest first",
        parameters=[
            ACCOUNT_FILTER,
            OpenApiParameter(
                "kind", OpenApiTypes.STR, enum=[k for k, _ in Transaction.Kind.choices]
            ),
        ],
    ),
    retrieve=extend_schema(summary="A ledger transaction with its entries"),
)
class LedgerTransactionViewSet(viewsets.ReadOnlyModelViewSet):
    """Read-only: the ledger is append-only and written by the billing services."""

    serializer_class = LedgerTransactionSerializer
    pagination_class = LedgerPagination
    queryset = Transaction.objects.select_related("created_by")

    def get_queryset(self) -> QuerySet[Transaction]:
        queryset = scope_to_user(self.queryset, request=self.request)
        kind = self.request.query_params.get("kind")
        if kind:
            if kind not in Transaction.Kind.values:
                raise ValidationError({"kind": f"One of {', '.join(Transaction.Kind.values)}."})
            queryset = queryset.filter(kind=kind)
        entries = Entry.objects.select_related("ledger_account").order_by("pk")
        if not self.request.user.is_staff:
            # A member sees what happened to their balance, not the house side
            # (revenue, upstream cost) of the posting.
            entries = entries.filter(ledger_account__account__isnull=False)
        return queryset.prefetch_related(
            Prefetch("entries", queryset=entries, to_attr="visible_entries")
        ).order_by("-created_at", "-id")


@extend_schema_view(
    list=extend_schema(summary="Monthly statements", parameters=[ACCOUNT_FILTER]),
    retrieve=extend_schema(summary="A monthly statement"),
)
class StatementViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = StatementSerializer
    queryset = Statement.objects.order_by("-period_start", "account_id")

    def get_queryset(self) -> QuerySet[Statement]:
        return scope_to_user(self.queryset, request=self.request)

    @extend_schema(
        summary="Generate a closed month's statement (staff)",
        description="Computed from the ledger and stored once; asking again returns the "
        "stored statement (200).",
        request=StatementGenerateSerializer,
        responses={200: StatementSerializer, 201: StatementSerializer},
    )
    @action(detail=False, methods=["post"], permission_classes=[IsStaff])
    def generate(self, request: Request) -> Response:
        params = StatementGenerateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        account = params.validated_data["account"]
        period_start = params.validated_data["month"]
        existed = Statement.objects.filter(account=account, period_start=period_start).exists()
        try:
            statement = statement_generate(account_id=account.pk, period_start=period_start)
        except LedgerError as exc:
            raise ValidationError({"detail": str(exc)}) from exc
        return Response(
            StatementSerializer(statement).data,
            status=status.HTTP_200_OK if existed else status.HTTP_201_CREATED,
        )


# -- money on an account: credits and redemption -------------------------------------

CreditResponse = inline_serializer(
    "CreditResponse",
    {
        "transaction": LedgerTransactionSerializer(),
        "balance": BalanceSerializer(),
    },
)


class AccountMoneyViewSet(viewsets.GenericViewSet):
    """Money moved onto an account, at ``/api/accounts/{id}/credits/`` and
    ``/api/accounts/{id}/redeem/``: always through the ledger."""

    queryset = Account.objects.order_by("pk")
    serializer_class = BalanceSerializer

    def get_queryset(self) -> QuerySet[Account]:
        queryset = self.queryset
        if self.request.user.is_staff:
            return queryset
        own = member_account_id(self.request.user)
        return queryset.filter(pk=own) if own is not None else queryset.none()

    def _credited(self, account: Account, txn: Transaction) -> Response:
        """The transaction posted and the balance after it."""
        account.refresh_from_db()
        context = self.get_serializer_context()
        return Response(
            {
                "transaction": LedgerTransactionSerializer(txn, context=context).data,
                "balance": BalanceSerializer(account).data,
            },
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(
        summary="Top up or adjust the balance through the ledger (staff)",
        description="A top-up (positive) or an adjustment (any sign, memo = reason) posted "
        "as one balanced ledger transaction. Amounts are integer micro-USD. A refused "
        "posting (e.g. an adjustment below the overdraft limit) changes nothing.",
        request=CreditSerializer,
        responses={201: CreditResponse},
    )
    @action(detail=True, methods=["post"], permission_classes=[IsStaff])
    def credits(self, request: Request, pk: str | None = None) -> Response:
        account = self.get_object()
        params = CreditSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        key = data.get("idempotency_key")
        # Scoped so a caller's key can never collide with the ledger's own keys.
        full_key = f"api-credit:{account.pk}:{key}" if key else None
        try:
            if data["kind"] == Transaction.Kind.ADJUSTMENT:
                txn = account_adjust(
                    account=account,
                    amount=data["amount"],
                    reason=data["memo"],
                    staff=request.user,  # type: ignore[arg-type]
                    idempotency_key=full_key,
                )
            else:
                txn = account_credit(
                    account=account,
                    amount=data["amount"],
                    memo=data["memo"],
                    created_by=request.user,  # type: ignore[arg-type]
                    idempotency_key=full_key,
                )
        except LedgerError as exc:
            raise ValidationError({"detail": str(exc)}) from exc
        if txn.kind != data["kind"] or _customer_amount(txn, account) != data["amount"]:
            return Response(
                {"detail": "This idempotency key was already used for a different credit."},
                status=status.HTTP_409_CONFLICT,
            )
        return self._credited(account, txn)

    @extend_schema(
        summary="Redeem a code for credit",
        description="Credits the account with the code's value, once. Members may redeem "
        "for their own account.",
        request=RedeemSerializer,
        responses={201: CreditResponse},
    )
    @action(detail=True, methods=["post"])
    def redeem(self, request: Request, pk: str | None = None) -> Response:
        account = self.get_object()
        params = RedeemSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        try:
            txn = redemption_redeem(
                account=account,
                code=params.validated_data["code"],
                user=request.user,  # type: ignore[arg-type]
            )
        except RedemptionError as exc:
            raise ValidationError({"code": [str(exc)]}) from exc
        return self._credited(account, txn)


def _customer_amount(txn: Transaction, account: Account) -> int:
    entries = txn.entries.filter(ledger_account__account_id=account.pk)
    return entries.aggregate(total=Sum("amount"))["total"] or 0
