from django.apps import AppConfig
from django.db.models.signals import post_save


class BillingConfig(AppConfig):
    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from accounts.models import Account

        from .services.ledger import ledger_account_open

        post_save.connect(
            ledger_account_open, sender=Account, dispatch_uid="billing.ledger_account_open"
        )
