"""Management API: upstream channels (staff only)."""

from django.db.models.deletion import ProtectedError
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api import IsStaff

from .models import Channel
from .selectors import channel_cache_invalidate
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
