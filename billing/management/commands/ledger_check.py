import sys

from django.core.management.base import BaseCommand

from billing.reconcile import CHECK_COUNT, ledger_check


class Command(BaseCommand):
    help = "Verify the ledger and the cached balances. Reports only; exits 1 on any breach."

    def handle(self, *args, **options):
        breaches = ledger_check()
        for breach in breaches:
            self.stderr.write(self.style.ERROR(str(breach)))
        if breaches:
            self.stderr.write(self.style.ERROR(f"{len(breaches)} breach(es) found."))
            sys.exit(1)
        self.stdout.write(self.style.SUCCESS(f"Ledger reconciles ({CHECK_COUNT} checks passed)."))
