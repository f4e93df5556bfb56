"""An index for the newest-first usage log across all accounts (staff, CSV export).

Per account, the ``(account, -created_at)`` index already serves the log. Without an
account filter, ``ORDER BY created_at DESC, id DESC`` read the whole table to find a
page; this index answers it directly. On PostgreSQL it is built CONCURRENTLY so the
relay keeps writing usage records meanwhile.
"""

from django.db import migrations

INDEX = "usage_usagerecord_recent"
COLUMNS = "(created_at DESC, id DESC)"


def create(apps, schema_editor):
    table = apps.get_model("usage", "UsageRecord")._meta.db_table
    concurrently = "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""
    schema_editor.execute(f"CREATE INDEX {concurrently}IF NOT EXISTS {INDEX} ON {table} {COLUMNS}")


def drop(apps, schema_editor):
    concurrently = "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""
    schema_editor.execute(f"DROP INDEX {concurrently}IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    # CREATE INDEX CONCURRENTLY cannot run inside a transaction.
    atomic = False

    dependencies = [("usage", "0002_usagedaily")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
