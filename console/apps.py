from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The server-rendered pages: the members' console, and the staff pages added to
    the admin site. It owns no data: every read and write goes through the apps'
    selectors and services."""

    name = "console"
