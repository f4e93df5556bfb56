"""The management API (``/api/``) and its OpenAPI schema."""

from django.conf import settings
from django.urls import include, path, re_path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)
from rest_framework.routers import DefaultRouter

from accounts.api import AccountViewSet, ApiKeyViewSet, ObtainTokenView
from billing.api import (
    AccountMoneyViewSet,
    LedgerTransactionViewSet,
    ModelPriceViewSet,
    PriceGroupViewSet,
    RedemptionCodeViewSet,
    StatementViewSet,
)
from core.errors import api_not_found
from relay.api import ChannelViewSet, MarginViewSet
from usage.api import UsageRecordViewSet


class RedocView(SpectacularRedocView):
    """Redoc under the pages' security policy: its own template (no web fonts from
    another origin), and its search runs in a worker it makes from a blob, which
    this page alone may start."""

    template_name = "api/redoc.html"

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if settings.CONTENT_SECURITY_POLICY:
            response["Content-Security-Policy"] = (
                f"{settings.CONTENT_SECURITY_POLICY}; worker-src 'self' blob:"
            )
        return response


router = DefaultRouter()
router.register("accounts", AccountViewSet, basename="account")
# The money moved onto an account (credits, redemption) is billing's, at the same paths.
router.register("accounts", AccountMoneyViewSet, basename="account-money")
router.register("keys", ApiKeyViewSet, basename="apikey")
router.register("price-groups", PriceGroupViewSet, basename="pricegroup")
router.register("prices", ModelPriceViewSet, basename="modelprice")
router.register("channels", ChannelViewSet, basename="channel")
router.register("redemption-codes", RedemptionCodeViewSet, basename="redemptioncode")
router.register("usage", UsageRecordViewSet, basename="usagerecord")
router.register("ledger", LedgerTransactionViewSet, basename="transaction")
router.register("statements", StatementViewSet, basename="statement")
router.register("margin", MarginViewSet, basename="margin")

urlpatterns = [
    path("auth/token/", ObtainTokenView.as_view(), name="api-token"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's start-up script as a file of its own: the
    # pages' Content-Security-Policy refuses inline scripts.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("redoc/", RedocView.as_view(url_name="api-schema"), name="api-redoc"),
    path("", include(router.urls)),
    re_path(r"", api_not_found),
]
