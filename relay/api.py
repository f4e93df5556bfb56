"""Management API: upstream channels (staff only)."""

from typing import Any

from django.db.models.deletion import ProtectedError
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from billing.selectors import margin_report, margin_window_start
from billing.serializers import MarginQuerySerializer, MarginReportSerializer
from core.access import IsStaff
from core.money import micro_to_usd

from .models import Channel
from .selectors import channel_cache_invalidate, channel_models_without_cost
from .serializers import ChannelSerializer


@extend_schema_view(
    list=extend_schema(summary="Upstream channels"),
    retrieve=extend_schema(summary="An upstream channel"),
    create=extend_schema(summary="Add an upstream channel"),
    update=extend_schema(summary="Replace a channel's settings"),
    partial_update=extend_schema(summary="Change a channel's settings"),
    destroy=extend_schema(
        summary="Delete a channel that never served a request",
        description="A channel with usage stays for the records: disable it instead (409).",
    ),
)
class ChannelViewSet(viewsets.ModelViewSet):
    """The upstream key is write-only (``api_key``); responses carry ``has_api_key``.
    Changes reach the relay at once in this process and within the channel cache's
    lifetime in the others."""

    serializer_class = ChannelSerializer
    queryset = Channel.objects.order_by("-priority", "pk")
    permission_classes = [IsStaff]

    def destroy(self, request: Request, *args: object, **kwargs: object) -> Response:
        channel = self.get_object()
        try:
            channel.delete()
        except ProtectedError:
            return Response(
                {"detail": "This channel has served requests; disable it instead."},
                status=status.HTTP_409_CONFLICT,
            )
        channel_cache_invalidate()
        return Response(status=status.HTTP_204_NO_CONTENT)


# -- margin -------------------------------------------------------------------------


def _margin_figures(revenue: int, cost: int) -> dict[str, Any]:
    return {
        "revenue": revenue,
        "revenue_usd": micro_to_usd(revenue),
        "upstream_cost": cost,
        "upstream_cost_usd": micro_to_usd(cost),
        "margin": revenue - cost,
        "margin_usd": micro_to_usd(revenue - cost),
    }


class MarginViewSet(viewsets.ViewSet):
    """Staff only: what usage earned, read from the ledger."""

    permission_classes = [IsStaff]

    @extend_schema(
        summary="Margin: revenue, upstream cost and margin (staff)",
        description="Read from the ledger's usage postings, per UTC day, model, channel or "
        "account, over a window of posting times (by default the last 30 UTC days). A "
        "channel with no cost price for a model books that model's upstream cost as zero: "
        "its rows say so in cost_prices_missing.",
        parameters=[MarginQuerySerializer],
        responses={200: MarginReportSerializer},
    )
    def list(self, request: Request) -> Response:
        params = MarginQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        by = params.validated_data["by"]
        start = params.validated_data.get("from") or margin_window_start(days=30)
        end = params.validated_data.get("to")
        lines = margin_report(by=by, start=start, end=end)
        missing: dict[int, list[str]] = {}
        if by == "channel":
            channel_ids = [line["channel"] for line in lines if line["channel"] is not None]
            missing = {
                channel.pk: channel_models_without_cost(channel)
                for channel in Channel.objects.filter(pk__in=channel_ids)
            }
        rows = []
        for line in lines:
            row: dict[str, Any] = {by: line[by]}
            if "name" in line:
                row["name"] = line["name"]
            if by == "channel":
                row["cost_prices_missing"] = missing.get(line["channel"], [])
            rows.append({**row, **_margin_figures(line["revenue"], line["cost"])})
        total = _margin_figures(
            sum(line["revenue"] for line in lines), sum(line["cost"] for line in lines)
        )
        body = {"by": by, "from": start, "to": end, "rows": rows, "total": total}
        return Response(body)
