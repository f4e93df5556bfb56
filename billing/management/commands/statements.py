from datetime import datetime

from django.core.management.base import BaseCommand, CommandError

from accounts.models import Account
from billing.statements import month_closed, statement_generate
from core.money import micro_to_usd


class Command(BaseCommand):
    help = "Generate (once) the monthly statements of a month, e.g. --month 2026-10."

    def add_arguments(self, parser):
        parser.add_argument("--month", required=True, help="YYYY-MM")
        parser.add_argument("--account", type=int, help="only this account id")

    def handle(self, *args, month: str, account: int | None, **options):
        try:
            start = datetime.strptime(month, "%Y-%m").date()
        except ValueError as exc:
            raise CommandError("--month must look like 2026-10") from exc
        if not month_closed(start):
            raise CommandError(
                f"{month} has not ended: a statement is stored once, so only a past month "
                "can be stated."
            )
        accounts = Account.objects.all()
        if account is not None:
            accounts = accounts.filter(pk=account)
        for acct in accounts.order_by("pk"):
            s = statement_generate(account_id=acct.pk, period_start=start)
            opening, credits = micro_to_usd(s.opening), micro_to_usd(s.credits)
            charges, closing = micro_to_usd(s.charges), micro_to_usd(s.closing)
            self.stdout.write(
                f"{acct.name}: opening {opening} + credits {credits} + charges {charges}"
                f" = closing {closing}"
            )
