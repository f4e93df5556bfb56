import django.db.models.deletion
from django.db import migrations, models


# A hold's account is found through the (account, status) index; the foreign key's
# own index only cost a write per hold. Only the index is dropped: the constraint
# stays as it is.


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_account_low_balance_alerted_and_more"),
        ("billing", "0007_hold_reserve_many"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="hold",
                    name="account",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="holds",
                        to="accounts.account",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    "DROP INDEX IF EXISTS billing_hold_account_id_56c002f9",
                    "CREATE INDEX billing_hold_account_id_56c002f9 ON billing_hold (account_id)",
                ),
            ],
        ),
    ]
