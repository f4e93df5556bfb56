from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from accounts.login import ThrottledAdminAuthenticationForm, ThrottledAuthenticationForm
from console.views import billing as billing_views
from console.views import keys as key_views
from console.views import staff as staff_views
from console.views import usage as usage_views
from core import errors, health
from relay import scrape

admin.site.site_header = "Tollgate administration"
admin.site.site_title = "Tollgate admin"
admin.site.index_title = "Accounts, money, channels and usage"
admin.site.login_form = ThrottledAdminAuthenticationForm

handler400 = errors.handler400
handler403 = errors.handler403
handler404 = errors.handler404
handler500 = errors.handler500

urlpatterns = [
    # The relay: OpenAI- and Anthropic-compatible, key-authenticated.
    path("", include("relay.urls")),
    # Probes.
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", scrape.metrics, name="metrics"),
    # The management API.
    path("api/", include("config.api_urls")),
    # Staff.
    path("admin/overview/", staff_views.admin_overview, name="admin-overview"),
    path("admin/mail/", staff_views.admin_mail, name="admin-mail"),
    path("admin/", admin.site.urls),
    # The console.
    path(
        "login/",
        auth_views.LoginView.as_view(
            redirect_authenticated_user=True, authentication_form=ThrottledAuthenticationForm
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", key_views.dashboard, name="dashboard"),
    path("keys/", key_views.keys, name="keys"),
    path("keys/<int:pk>/created/", key_views.key_created, name="key_created"),
    path("keys/<int:pk>/edit/", key_views.key_edit, name="key_edit"),
    path("keys/<int:pk>/revoke/", key_views.key_revoke, name="key_revoke"),
    path("usage/", usage_views.usage_log, name="usage"),
    path("usage/export.csv", usage_views.usage_export, name="usage_export"),
    path("billing/", billing_views.billing, name="billing"),
    path("billing/statements/<int:pk>/", billing_views.statement, name="statement"),
    path("models/", billing_views.models, name="models"),
]
