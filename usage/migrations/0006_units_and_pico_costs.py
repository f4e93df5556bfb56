"""Every billed unit gets a column; costs become exact pico-USD.

The micro-USD costs of past records become the same amounts in pico-USD
(x 1,000,000): what each was charged does not change. The new unit columns default
to zero in the database, so adding them rewrites nothing.
"""

from django.db import migrations, models

TABLES = ("usage_usagerecord", "usage_usagedaily")


def _scale(factor: str, divide: bool = False):
    op = "/" if divide else "*"

    def run(apps, schema_editor):
        with schema_editor.connection.cursor() as cursor:
            for table in TABLES:
                cursor.execute(
                    f"UPDATE {table} SET cost_pico = cost_pico {op} {factor}, "  # noqa: S608
                    f"upstream_cost_pico = upstream_cost_pico {op} {factor} "
                    "WHERE cost_pico <> 0 OR upstream_cost_pico <> 0"
                )

    return run


def _count(**kw):
    return models.PositiveIntegerField(db_default=0, default=0, **kw)


def _sum():
    return models.BigIntegerField(db_default=0, default=0)


class Migration(migrations.Migration):

    dependencies = [
        ("usage", "0005_usagerecord_failed_status"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="usagerecord", name="usage_cost_nonnegative"),
        migrations.RemoveConstraint(model_name="usagerecord", name="usage_charged_only_with_hold"),
        migrations.RenameField(model_name="usagerecord", old_name="cost", new_name="cost_pico"),
        migrations.RenameField(
            model_name="usagerecord", old_name="upstream_cost", new_name="upstream_cost_pico"
        ),
        migrations.RenameField(model_name="usagedaily", old_name="cost", new_name="cost_pico"),
        migrations.RenameField(
            model_name="usagedaily", old_name="upstream_cost", new_name="upstream_cost_pico"
        ),
        migrations.RunPython(_scale("1000000"), _scale("1000000", divide=True)),
        migrations.AddConstraint(
            model_name="usagerecord",
            constraint=models.CheckConstraint(
                condition=models.Q(("cost_pico__gte", 0), ("upstream_cost_pico__gte", 0)),
                name="usage_cost_nonnegative",
            ),
        ),
        migrations.AddConstraint(
            model_name="usagerecord",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("status", "rejected"),
                    ("hold__isnull", False),
                    ("cost_pico", 0),
                    _connector="OR",
                ),
                name="usage_charged_only_with_hold",
            ),
        ),
        migrations.AddField("usagerecord", "cache_write_1h_tokens", _count()),
        migrations.AddField("usagerecord", "audio_input_tokens", _count()),
        migrations.AddField("usagerecord", "audio_output_tokens", _count()),
        migrations.AddField("usagerecord", "image_input_tokens", _count()),
        migrations.AddField("usagerecord", "image_output_tokens", _count()),
        migrations.AddField("usagerecord", "images", _count()),
        migrations.AddField(
            "usagerecord", "audio_ms", models.PositiveBigIntegerField(db_default=0, default=0)
        ),
        migrations.AddField("usagerecord", "characters", _count()),
        migrations.AddField("usagerecord", "search_units", _count()),
        migrations.AddField("usagerecord", "tool_calls", _count()),
        migrations.AddField(
            "usagerecord",
            "unit_details",
            models.JSONField(blank=True, db_default={}, default=dict),
        ),
        migrations.AddField("usagedaily", "cache_write_1h_tokens", _sum()),
        migrations.AddField("usagedaily", "audio_input_tokens", _sum()),
        migrations.AddField("usagedaily", "audio_output_tokens", _sum()),
        migrations.AddField("usagedaily", "image_input_tokens", _sum()),
        migrations.AddField("usagedaily", "image_output_tokens", _sum()),
        migrations.AddField("usagedaily", "images", _sum()),
        migrations.AddField("usagedaily", "audio_ms", _sum()),
        migrations.AddField("usagedaily", "characters", _sum()),
        migrations.AddField("usagedaily", "search_units", _sum()),
        migrations.AddField("usagedaily", "tool_calls", _sum()),
    ]
