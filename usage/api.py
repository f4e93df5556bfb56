"""Management API: the usage log (cursor-paged) and its CSV export (streamed)."""

import json
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request

from core.access import account_ids_for, scope_to_user

from .models import UsageRecord
from .selectors import usage_csv_stream, usage_records
from .serializers import UsageFilterSerializer, UsageRecordSerializer


class UsagePagination(CursorPagination):
    # A cursor, not an offset: deep pages stay as cheap as the first on millions of rows.
    ordering = ("-created_at", "-id")
    page_size_query_param = "limit"
    max_page_size = 1000


class CSVRenderer(BaseRenderer):
    """Lets clients ask for ``text/csv``; the export's body is streamed by the view, so
    this only ever renders an error, as JSON text."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: Any = None, renderer_context: Any = None):
        return json.dumps(data).encode()


@extend_schema_view(
    list=extend_schema(
        summary="Usage records, newest first",
        description="One record per request. Cursor-paged: follow next/previous. Amounts "
        "are integer micro-USD.",
        parameters=[UsageFilterSerializer],
    ),
    retrieve=extend_schema(summary="A usage record"),
)
class UsageRecordViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = UsageRecordSerializer
    pagination_class = UsagePagination
    queryset = UsageRecord.objects.all()

    def _filters(self) -> dict[str, Any]:
        params = UsageFilterSerializer(data=self.request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        return {
            "key": data.get("key"),
            "model": data.get("model"),
            "status": data.get("status"),
            "start": data.get("from"),
            "end": data.get("to"),
        }

    def get_queryset(self) -> QuerySet[UsageRecord]:
        if self.action in ("list", "export"):
            return usage_records(account_ids=account_ids_for(self.request), **self._filters())
        return scope_to_user(self.queryset.select_related("api_key"), request=self.request)

    @extend_schema(
        summary="Export usage records as CSV",
        description="Same filters as the list; every matching record, newest first, streamed. "
        "Costs in micro-USD and as USD strings.",
        parameters=[UsageFilterSerializer],
        responses={(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR)},
    )
    @action(detail=False, methods=["get"], renderer_classes=[JSONRenderer, CSVRenderer])
    def export(self, request: Request) -> StreamingHttpResponse:
        content = usage_csv_stream(
            queryset=self.get_queryset(), asynchronous=isinstance(request._request, ASGIRequest)
        )
        response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="usage-{stamp}.csv"'
        return response
