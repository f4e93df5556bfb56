"""The relay's routes: one per dialect (from its ``path``), the model list, and the
stored responses' routes."""

from django.urls import path, re_path

from core import errors

from . import stored_views, views
from .dialects import DIALECTS

urlpatterns = [
    *(path(d.path.removeprefix("/"), views.relayed(d)) for d in DIALECTS),
    path("v1/models", views.models),
    path("v1/responses/<str:response_id>", stored_views.stored_response),
    path("v1/responses/<str:response_id>/input_items", stored_views.stored_response_input_items),
    path("v1/responses/<str:response_id>/cancel", stored_views.stored_response_cancel),
    re_path(r"^v1/", errors.relay_not_found),
]
