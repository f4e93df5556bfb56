"""Database guards for the ledger's invariants.

- Posted entries and transactions are immutable: updates and deletes are refused
  (corrections are new transactions).
- Every transaction's entries sum to zero, checked at commit (PostgreSQL).
- A hold resolves exactly once: once it has left ``open`` it cannot change again.
"""

from django.db import migrations

POSTGRES = [
    """
    CREATE OR REPLACE FUNCTION tollgate_ledger_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'integrity_constraint_violation';
    END $$;
    """,
    """
    CREATE TRIGGER entry_immutable BEFORE UPDATE OR DELETE ON billing_entry
        FOR EACH ROW EXECUTE FUNCTION tollgate_ledger_immutable();
    """,
    """
    CREATE TRIGGER transaction_immutable BEFORE UPDATE OR DELETE ON billing_transaction
        FOR EACH ROW EXECUTE FUNCTION tollgate_ledger_immutable();
    """,
    """
    CREATE OR REPLACE FUNCTION tollgate_entries_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE total bigint;
    BEGIN
        SELECT SUM(amount) INTO total FROM billing_entry WHERE transaction_id = NEW.transaction_id;
        IF total <> 0 THEN
            RAISE EXCEPTION 'transaction % does not balance (sum %)', NEW.transaction_id, total
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NULL;
    END $$;
    """,
    """
    CREATE CONSTRAINT TRIGGER entries_balanced AFTER INSERT ON billing_entry
        DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION tollgate_entries_balanced();
    """,
    """
    CREATE OR REPLACE FUNCTION tollgate_hold_resolves_once() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF OLD.status <> 'open' OR NEW.amount <> OLD.amount OR NEW.account_id <> OLD.account_id THEN
            RAISE EXCEPTION 'hold % is % and cannot change', OLD.id, OLD.status
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END $$;
    """,
    """
    CREATE TRIGGER hold_resolves_once BEFORE UPDATE ON billing_hold
        FOR EACH ROW EXECUTE FUNCTION tollgate_hold_resolves_once();
    """,
]

POSTGRES_DROP = [
    "DROP TRIGGER IF EXISTS hold_resolves_once ON billing_hold",
    "DROP FUNCTION IF EXISTS tollgate_hold_resolves_once()",
    "DROP TRIGGER IF EXISTS entries_balanced ON billing_entry",
    "DROP FUNCTION IF EXISTS tollgate_entries_balanced()",
    "DROP TRIGGER IF EXISTS transaction_immutable ON billing_transaction",
    "DROP TRIGGER IF EXISTS entry_immutable ON billing_entry",
    "DROP FUNCTION IF EXISTS tollgate_ledger_immutable()",
]

SQLITE = [
    f"""
    CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table}
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END
    """
    for table in ("billing_entry", "billing_transaction")
    for op in ("UPDATE", "DELETE")
] + [
    """
    CREATE TRIGGER hold_resolves_once BEFORE UPDATE ON billing_hold
    WHEN OLD.status <> 'open' OR NEW.amount <> OLD.amount OR NEW.account_id <> OLD.account_id
    BEGIN SELECT RAISE(ABORT, 'a resolved hold cannot change'); END
    """
]

SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS billing_entry_no_update",
    "DROP TRIGGER IF EXISTS billing_entry_no_delete",
    "DROP TRIGGER IF EXISTS billing_transaction_no_update",
    "DROP TRIGGER IF EXISTS billing_transaction_no_delete",
    "DROP TRIGGER IF EXISTS hold_resolves_once",
]


def forward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for sql in POSTGRES if vendor == "postgresql" else SQLITE if vendor == "sqlite" else []:
        schema_editor.execute(sql, params=None)


def backward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for sql in POSTGRES_DROP if vendor == "postgresql" else SQLITE_DROP if vendor == "sqlite" else []:
        schema_editor.execute(sql, params=None)


class Migration(migrations.Migration):
    dependencies = [("billing", "0004_redemptioncode_statement")]

    operations = [migrations.RunPython(forward, backward)]
