from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from billing.catalogue import CatalogueError, catalogue_import, catalogue_parse
from billing.models import PriceGroup


class Command(BaseCommand):
    help = (
        "Import prices from a LiteLLM model_prices_and_context_window.json into a price "
        "group: one new version per new or changed model. --dry-run shows the diff only."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="The catalogue (JSON).")
        parser.add_argument("--group", required=True, help="The price group's name or id.")
        parser.add_argument("--dry-run", action="store_true", help="Show the diff; write nothing.")
        parser.add_argument(
            "--model",
            dest="models",
            action="extend",
            nargs="+",
            default=[],
            metavar="PATTERN",
            help="Only models whose catalogue key or name matches one of these globs.",
        )
        parser.add_argument("--provider", default="", help="Only this litellm_provider.")
        parser.add_argument(
            "--strip-prefix",
            action="store_true",
            help='Import "anthropic/claude-x" as "claude-x".',
        )
        parser.add_argument(
            "--effective-from",
            metavar="ISO",
            help="When the new versions start (default: now), e.g. 2027-01-31T00:00:00Z.",
        )

    def handle(self, *args, **options):
        path = Path(options["file"])
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            raise CommandError(f"{path}: no such file") from None
        except OSError as exc:
            raise CommandError(f"{path}: {exc.strerror}") from None
        group = self.group(options["group"])
        effective_from = None
        if options["effective_from"]:
            effective_from = parse_datetime(options["effective_from"])
            if effective_from is None:
                raise CommandError(
                    f"--effective-from {options['effective_from']!r} is not an ISO date and time"
                )
            if timezone.is_naive(effective_from):
                effective_from = timezone.make_aware(effective_from)
        try:
            result = catalogue_import(
                group=group,
                catalogue=catalogue_parse(text=text),
                models=options["models"],
                provider=options["provider"],
                strip_prefix=options["strip_prefix"],
                dry_run=options["dry_run"],
                effective_from=effective_from,
            )
        except CatalogueError as exc:
            raise CommandError(f"{path}: {exc}") from None
        for line in result.lines(unchanged=options["verbosity"] > 1):
            style = self.style.WARNING if line.startswith("!") else None
            self.stdout.write(line, style)
        style = self.style.NOTICE if result.dry_run else self.style.SUCCESS
        self.stdout.write(style(result.summary()))

    @staticmethod
    def group(name_or_id: str) -> PriceGroup:
        group = PriceGroup.objects.filter(name=name_or_id).first()
        if group is None and name_or_id.isdigit():
            group = PriceGroup.objects.filter(pk=int(name_or_id)).first()
        if group is None:
            raise CommandError(f"no price group named or numbered {name_or_id!r}")
        return group
