import django.db.models.deletion
from django.db import migrations, models


# Single-column indexes that other indexes already cover, or that nothing reads, cost
# a write on every record and every settlement. Only the indexes are dropped: the
# foreign keys stay as they are (letting Django drop and re-add them would check
# every row again).
DROPPED = [
    ("usage_usagerecord_account_id_dcd45f70", "account_id"),
    ("usage_usagerecord_api_key_id_93ec9f60", "api_key_id"),
    ("usage_usagerecord_request_id_adea5b8d", "request_id"),
    ("usage_usagerecord_settlement_id_9c2f1829", "settlement_id"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_account_low_balance_alerted_and_more"),
        ("billing", "0008_fewer_indexes"),
        ("relay", "0002_channel_cooling_until_channel_disabled_reason_and_more"),
        ("usage", "0003_usagerecord_recent_index"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="usagerecord",
            index=models.Index(fields=["request_id"], name="usage_request_id"),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="usagerecord",
                    name="account",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="usage_records",
                        to="accounts.account",
                    ),
                ),
                migrations.AlterField(
                    model_name="usagerecord",
                    name="api_key",
                    field=models.ForeignKey(
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="usage_records",
                        to="accounts.apikey",
                    ),
                ),
                migrations.AlterField(
                    model_name="usagerecord",
                    name="request_id",
                    field=models.CharField(max_length=128),
                ),
                migrations.AlterField(
                    model_name="usagerecord",
                    name="settlement",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="billing.transaction",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    # The pattern-matching twin PostgreSQL had for the old index.
                    ["DROP INDEX IF EXISTS usage_usagerecord_request_id_adea5b8d_like"]
                    + [f"DROP INDEX IF EXISTS {name}" for name, _ in DROPPED],
                    [
                        f"CREATE INDEX {name} ON usage_usagerecord ({column})"
                        for name, column in DROPPED
                    ],
                ),
            ],
        ),
    ]
