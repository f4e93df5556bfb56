"""The hold reservation as one PostgreSQL function: one round trip for the key check,
the spend limits, the conditional ``held`` increment and the hold row."""

from django.db import migrations

RESERVE = """
CREATE OR REPLACE FUNCTION tollgate_hold_reserve(
    p_key_id bigint, p_account_id bigint, p_amount bigint, p_request_id varchar
) RETURNS bigint LANGUAGE plpgsql AS $$
-- Returns the new hold id, or a negative refusal code:
-- -1 key revoked or expired, -2 daily spend limit, -3 monthly spend limit,
-- -4 account suspended, -5 insufficient balance. Nothing is changed on refusal.
DECLARE
    k record;
    v_day date := (now() AT TIME ZONE 'UTC')::date;
    v_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    v_status varchar;
    v_hold bigint;
BEGIN
    SELECT status, expires_at, daily_spend_limit, monthly_spend_limit INTO k
      FROM accounts_apikey WHERE id = p_key_id AND account_id = p_account_id;
    IF NOT FOUND OR k.status <> 'active' OR (k.expires_at IS NOT NULL AND k.expires_at <= now()) THEN
        RETURN -1;
    END IF;
    UPDATE accounts_account SET held = held + p_amount
     WHERE id = p_account_id AND status = 'active' AND balance - held >= p_amount;
    IF NOT FOUND THEN
        SELECT status INTO v_status FROM accounts_account WHERE id = p_account_id;
        RETURN CASE WHEN v_status = 'active' THEN -5 ELSE -4 END;
    END IF;
    IF k.daily_spend_limit IS NOT NULL THEN
        INSERT INTO billing_keyspend (api_key_id, period, start, spent, held)
             VALUES (p_key_id, 'day', v_day, 0, 0) ON CONFLICT DO NOTHING;
        UPDATE billing_keyspend SET held = held + p_amount
         WHERE api_key_id = p_key_id AND period = 'day' AND start = v_day
           AND spent + held + p_amount <= k.daily_spend_limit;
        IF NOT FOUND THEN
            UPDATE accounts_account SET held = held - p_amount WHERE id = p_account_id;
            RETURN -2;
        END IF;
    END IF;
    IF k.monthly_spend_limit IS NOT NULL THEN
        INSERT INTO billing_keyspend (api_key_id, period, start, spent, held)
             VALUES (p_key_id, 'month', v_month, 0, 0) ON CONFLICT DO NOTHING;
        UPDATE billing_keyspend SET held = held + p_amount
         WHERE api_key_id = p_key_id AND period = 'month' AND start = v_month
           AND spent + held + p_amount <= k.monthly_spend_limit;
        IF NOT FOUND THEN
            UPDATE accounts_account SET held = held - p_amount WHERE id = p_account_id;
            IF k.daily_spend_limit IS NOT NULL THEN
                UPDATE billing_keyspend SET held = held - p_amount
                 WHERE api_key_id = p_key_id AND period = 'day' AND start = v_day;
            END IF;
            RETURN -3;
        END IF;
    END IF;
    INSERT INTO billing_hold (account_id, api_key_id, request_id, amount, status, created_at,
                              spend_day, spend_month)
         VALUES (p_account_id, p_key_id, p_request_id, p_amount, 'open', now(),
                 CASE WHEN k.daily_spend_limit IS NOT NULL THEN v_day END,
                 CASE WHEN k.monthly_spend_limit IS NOT NULL THEN v_month END)
      RETURNING id INTO v_hold;
    RETURN v_hold;
END;
$$;
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(RESERVE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS tollgate_hold_reserve(bigint, bigint, bigint, varchar)")


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0002_hold_spend_day_hold_spend_month_keyspend"),
        ("accounts", "0003_account_auto_models_account_auto_strategy_and_more"),
    ]

    operations = [migrations.RunPython(create, drop)]
