"""The management API (``/api/``) and its OpenAPI schema."""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from accounts.api import AccountViewSet, ApiKeyViewSet, ObtainTokenView
from billing.api import (
    LedgerTransactionViewSet,
    MarginViewSet,
    ModelPriceViewSet,
    PriceGroupViewSet,
    RedemptionCodeViewSet,
    StatementViewSet,
)
from config.errors import api_not_found
from relay.api import ChannelViewSet
from usage.api import UsageRecordViewSet

router = DefaultRouter()
router.register("accounts", AccountViewSet, basename="account")
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
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    path("", include(router.urls)),
    re_path(r"", api_not_found),
]
