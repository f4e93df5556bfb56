from django.contrib import admin
from django.urls import include, path

from relay import views as relay_views

urlpatterns = [
    path("v1/chat/completions", relay_views.chat_completions),
    path("v1/messages", relay_views.messages),
    path("v1/embeddings", relay_views.embeddings),
    path("v1/models", relay_views.models),
    path("api/", include("config.api_urls")),
    path("admin/", admin.site.urls),
]
