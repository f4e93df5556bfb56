"""The relay's routes: one per dialect (from its ``path``), and the model list."""

from django.urls import path, re_path

from core import errors

from . import views
from .dialects import DIALECTS

urlpatterns = [
    *(path(d.path.removeprefix("/"), views.relayed(d)) for d in DIALECTS),
    path("v1/models", views.models),
    re_path(r"^v1/", errors.relay_not_found),
]
