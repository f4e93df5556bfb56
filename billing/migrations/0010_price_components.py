"""Prices become versions of components; sub-micro remainders are carried.

Each old price row becomes the same version with one component per price it set:
input and output always, cache read, cache write and reasoning where set (an empty
one fell back to the input or output price, as a missing component still does), and
the per-request fee where it was not zero. The reverse puts the five prices back
from the components a row of the old shape could hold.
"""

from decimal import Decimal

import django.db.models.deletion
from django.db import migrations, models

OLD_COLUMNS = {
    "input_per_m": "input",
    "output_per_m": "output",
    "cache_read_per_m": "cache_read",
    "cache_write_per_m": "cache_write",
    "reasoning_per_m": "reasoning",
    "request_fee": "request",
}


def components_from_rows(apps, schema_editor):
    ModelPrice = apps.get_model("billing", "ModelPrice")
    PriceComponent = apps.get_model("billing", "PriceComponent")
    batch = []
    for row in ModelPrice.objects.order_by("pk").iterator(chunk_size=2000):
        for column, unit in OLD_COLUMNS.items():
            rate = getattr(row, column)
            if rate is None or (unit == "request" and rate == 0):
                continue
            batch.append(PriceComponent(price_id=row.pk, unit=unit, rate=rate))
        if len(batch) >= 5000:
            PriceComponent.objects.bulk_create(batch)
            batch = []
    PriceComponent.objects.bulk_create(batch)


def rows_from_components(apps, schema_editor):
    ModelPrice = apps.get_model("billing", "ModelPrice")
    PriceComponent = apps.get_model("billing", "PriceComponent")
    rates: dict[int, dict[str, Decimal]] = {}
    plain = PriceComponent.objects.filter(
        above=0, size="", quality="", tool="", service_tier=""
    ).values_list("price_id", "unit", "rate")
    for price_id, unit, rate in plain:
        rates.setdefault(price_id, {})[unit] = rate
    for row in ModelPrice.objects.order_by("pk"):
        own = rates.get(row.pk, {})
        for column, unit in OLD_COLUMNS.items():
            default = Decimal(0) if column in ("input_per_m", "output_per_m", "request_fee") else None
            setattr(row, column, own.get(unit, default))
        row.save()


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0004_account_low_balance_alerted_and_more"),
        ("billing", "0009_modelprice_mode"),
    ]

    operations = [
        migrations.AddField(
            model_name="pricegroup",
            name="multiplier",
            field=models.DecimalField(decimal_places=4, default=Decimal("1"), max_digits=8),
        ),
        migrations.AddConstraint(
            model_name="pricegroup",
            constraint=models.CheckConstraint(
                condition=models.Q(("multiplier__gte", 0)),
                name="pricegroup_multiplier_nonnegative",
            ),
        ),
        migrations.AlterField(
            model_name="modelprice",
            name="mode",
            field=models.CharField(
                choices=[
                    ("chat", "Chat (chat completions, messages, responses)"),
                    ("completion", "Completions (legacy)"),
                    ("embedding", "Embeddings"),
                    ("image_generation", "Images"),
                    ("audio_transcription", "Audio transcription"),
                    ("audio_speech", "Speech"),
                    ("rerank", "Rerank"),
                    ("moderation", "Moderations"),
                ],
                default="chat",
                max_length=32,
            ),
        ),
        migrations.CreateModel(
            name="PriceComponent",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "unit",
                    models.CharField(
                        choices=[
                            ("input", "Input tokens"),
                            ("cache_read", "Cache read tokens"),
                            ("cache_write", "Cache write tokens (5 minutes)"),
                            ("cache_write_1h", "Cache write tokens (1 hour)"),
                            ("audio_input", "Audio input tokens"),
                            ("image_input", "Image input tokens"),
                            ("output", "Output tokens"),
                            ("reasoning", "Reasoning tokens"),
                            ("audio_output", "Audio output tokens"),
                            ("image_output", "Image output tokens"),
                            ("request", "Requests"),
                            ("image", "Images"),
                            ("audio_second", "Audio"),
                            ("character", "Characters"),
                            ("search_unit", "Search units"),
                            ("tool_call", "Tool calls"),
                        ],
                        max_length=32,
                    ),
                ),
                ("rate", models.DecimalField(decimal_places=12, max_digits=24)),
                (
                    "above",
                    models.PositiveIntegerField(
                        default=0,
                        help_text="Applies when the prompt is above this many tokens (0: always).",
                    ),
                ),
                ("size", models.CharField(blank=True, max_length=32)),
                ("quality", models.CharField(blank=True, max_length=32)),
                ("tool", models.CharField(blank=True, max_length=64)),
                ("service_tier", models.CharField(blank=True, max_length=32)),
                (
                    "price",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="components",
                        to="billing.modelprice",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("price", "unit", "above", "size", "quality", "tool", "service_tier"),
                        name="pricecomponent_unique_conditions",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("rate__gte", 0)), name="pricecomponent_rate_nonnegative"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("unit", "image"), models.Q(("size", ""), ("quality", "")), _connector="OR"),
                        name="pricecomponent_size_only_for_images",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("unit", "tool_call"), ("tool", ""), _connector="OR"),
                        name="pricecomponent_tool_only_for_tool_calls",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="Carry",
            fields=[
                (
                    "account",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="accounts.account",
                    ),
                ),
                ("pico", models.BigIntegerField(default=0)),
            ],
            options={
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("pico__gte", 0), ("pico__lt", 1000000)),
                        name="carry_below_one_micro",
                    )
                ],
            },
        ),
        # Nullable first, so that going back re-adds them empty and fills them in.
        migrations.AlterField(
            model_name="modelprice",
            name="input_per_m",
            field=models.DecimalField(decimal_places=6, max_digits=14, null=True),
        ),
        migrations.AlterField(
            model_name="modelprice",
            name="output_per_m",
            field=models.DecimalField(decimal_places=6, max_digits=14, null=True),
        ),
        migrations.RemoveConstraint(model_name="modelprice", name="modelprice_nonnegative"),
        migrations.RunPython(components_from_rows, rows_from_components),
        migrations.RemoveField(model_name="modelprice", name="input_per_m"),
        migrations.RemoveField(model_name="modelprice", name="output_per_m"),
        migrations.RemoveField(model_name="modelprice", name="cache_read_per_m"),
        migrations.RemoveField(model_name="modelprice", name="cache_write_per_m"),
        migrations.RemoveField(model_name="modelprice", name="reasoning_per_m"),
        migrations.RemoveField(model_name="modelprice", name="request_fee"),
    ]
