"""Reconciliation: prove the ledger and the cached figures agree. Reports, never fixes.

Checks (each a SQL query over the whole ledger):

1. every transaction's entries sum to zero, and every transaction has entries;
2. the ledger as a whole sums to zero;
3. each account's cached ``balance`` equals the sum of its customer entries;
4. each account's ``held`` equals the sum of its open holds;
5. each key's held spend (per day and month) equals its open spend-tracked holds;
6. every finished usage record is settled, and settled exactly once: each charge
   transaction's revenue is the exact cost of the records that point to it (to
   within the sub-micro-USD carried in and out), its upstream cost is theirs, no
   charged record lacks a settlement, and what each account was charged plus what
   it carries is exactly the sum of its settled records' costs;
7. no settled record still has an open hold;
8. no hold has been open for minutes while no web process has its request in
   flight (``core.inflight``): a hold left behind.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from core.inflight import holds_in_flight

from .models import Hold

logger = logging.getLogger("tollgate.billing")


@dataclass(frozen=True, slots=True)
class Breach:
    check: str
    detail: str

    def __str__(self) -> str:
        return f"{self.check}: {self.detail}"


CHECKS: list[tuple[str, str, str]] = [
    (
        "transaction_unbalanced",
        """SELECT transaction_id, SUM(amount) FROM billing_entry
           GROUP BY transaction_id HAVING SUM(amount) <> 0""",
        "transaction {0} sums to {1}",
    ),
    (
        "transaction_without_entries",
        """SELECT t.id FROM billing_transaction t
           WHERE NOT EXISTS (SELECT 1 FROM billing_entry e WHERE e.transaction_id = t.id)""",
        "transaction {0} has no entries",
    ),
    (
        "ledger_unbalanced",
        """SELECT SUM(amount) FROM billing_entry HAVING SUM(amount) <> 0""",
        "all entries sum to {0}",
    ),
    (
        "balance_mismatch",
        """SELECT a.id, a.balance, COALESCE(s.total, 0)
           FROM accounts_account a
           JOIN billing_ledgeraccount la ON la.account_id = a.id
           LEFT JOIN (SELECT ledger_account_id, SUM(amount) AS total FROM billing_entry
                      GROUP BY ledger_account_id) s ON s.ledger_account_id = la.id
           WHERE a.balance <> COALESCE(s.total, 0)""",
        "account {0}: cached balance {1}, entries {2}",
    ),
    (
        "held_mismatch",
        """SELECT a.id, a.held, COALESCE(h.total, 0)
           FROM accounts_account a
           LEFT JOIN (SELECT account_id, SUM(amount) AS total FROM billing_hold
                      WHERE status = 'open' GROUP BY account_id) h ON h.account_id = a.id
           WHERE a.held <> COALESCE(h.total, 0)""",
        "account {0}: cached held {1}, open holds {2}",
    ),
    (
        "key_spend_held_mismatch",
        """SELECT ks.api_key_id, ks.period, ks.start, ks.held, COALESCE(h.total, 0)
           FROM billing_keyspend ks
           LEFT JOIN (
               SELECT api_key_id, 'day' AS period, spend_day AS start, SUM(amount) AS total
                 FROM billing_hold WHERE status = 'open' AND spend_day IS NOT NULL
                 GROUP BY api_key_id, spend_day
               UNION ALL
               SELECT api_key_id, 'month', spend_month, SUM(amount)
                 FROM billing_hold WHERE status = 'open' AND spend_month IS NOT NULL
                 GROUP BY api_key_id, spend_month
           ) h ON h.api_key_id = ks.api_key_id AND h.period = ks.period AND h.start = ks.start
           WHERE ks.held <> COALESCE(h.total, 0)""",
        "key {0} {1} {2}: held {3}, open holds {4}",
    ),
    (
        "usage_unsettled",
        """SELECT id, request_id, created_at FROM usage_usagerecord
           WHERE settled_at IS NULL AND created_at < %(lag_cutoff)s""",
        "usage record {0} ({1}) finished at {2} and is not settled",
    ),
    (
        # A record of one micro-USD or more (charged or owed upstream) makes its batch
        # post a transaction; smaller ones may all be carried.
        "usage_charged_without_settlement",
        """SELECT id, request_id, cost_pico FROM usage_usagerecord
           WHERE settled_at IS NOT NULL AND settlement_id IS NULL
             AND (cost_pico >= 1000000 OR upstream_cost_pico >= 1000000)""",
        "usage record {0} ({1}) cost {2} pico-USD but has no settlement transaction",
    ),
    (
        # A charge's revenue and upstream cost are its records' exact ones, give or take
        # what the account carried in and out (each under one micro-USD).
        "settlement_mismatch",
        """SELECT t.id, COALESCE(r.cost, 0), COALESCE(e.revenue, 0),
                  COALESCE(r.upstream, 0), COALESCE(e.upstream, 0)
           FROM billing_transaction t
           LEFT JOIN (SELECT settlement_id, SUM(cost_pico) AS cost,
                             SUM(upstream_cost_pico) AS upstream
                      FROM usage_usagerecord WHERE settlement_id IS NOT NULL
                      GROUP BY settlement_id) r ON r.settlement_id = t.id
           LEFT JOIN (SELECT e.transaction_id,
                             SUM(CASE WHEN la.kind = 'revenue' THEN e.amount ELSE 0 END) AS revenue,
                             SUM(CASE WHEN la.kind = 'upstream_cost' THEN e.amount ELSE 0 END)
                                 AS upstream
                      FROM billing_entry e
                      JOIN billing_ledgeraccount la ON la.id = e.ledger_account_id
                      GROUP BY e.transaction_id) e ON e.transaction_id = t.id
           WHERE t.kind = 'charge'
             AND (ABS(COALESCE(e.revenue, 0) * 1000000 - COALESCE(r.cost, 0)) >= 1000000
                  OR ABS(COALESCE(e.upstream, 0) * 1000000 - COALESCE(r.upstream, 0))
                     >= 1000000)""",
        "charge {0}: records cost {1} pico-USD, revenue {2} micro-USD; records upstream {3} "
        "pico-USD, booked {4} micro-USD",
    ),
    (
        # What each account was charged for usage, plus what it carries, is the exact
        # sum of its settled records.
        "charged_not_exact",
        """SELECT a.id, COALESCE(r.cost, 0), COALESCE(e.revenue, 0), COALESCE(c.pico, 0)
           FROM accounts_account a
           LEFT JOIN (SELECT account_id, SUM(cost_pico) AS cost FROM usage_usagerecord
                      WHERE settled_at IS NOT NULL GROUP BY account_id) r
                  ON r.account_id = a.id
           LEFT JOIN (SELECT t.account_id, SUM(e.amount) AS revenue
                      FROM billing_entry e
                      JOIN billing_transaction t ON t.id = e.transaction_id
                      JOIN billing_ledgeraccount la ON la.id = e.ledger_account_id
                      WHERE t.kind = 'charge' AND la.kind = 'revenue'
                      GROUP BY t.account_id) e ON e.account_id = a.id
           LEFT JOIN billing_carry c ON c.account_id = a.id
           WHERE COALESCE(r.cost, 0) <> COALESCE(e.revenue, 0) * 1000000 + COALESCE(c.pico, 0)""",
        "account {0}: settled records cost {1} pico-USD, charged {2} micro-USD, carried {3} "
        "pico-USD",
    ),
    (
        "settled_with_open_hold",
        """SELECT u.id, u.hold_id FROM usage_usagerecord u
           JOIN billing_hold h ON h.id = u.hold_id
           WHERE u.settled_at IS NOT NULL AND h.status = 'open'""",
        "usage record {0} is settled but its hold {1} is still open",
    ),
]


# The SQL checks above, and the holds left open.
CHECK_COUNT = len(CHECKS) + 1


def ledger_check() -> list[Breach]:
    """Run every check; an empty list means the books reconcile."""
    lag = settings.TOLLGATE["SETTLEMENT_LAG_ALERT_SECONDS"]
    stale = settings.TOLLGATE["STALE_HOLD_SECONDS"]
    now = timezone.now()
    params = {
        "lag_cutoff": now - timedelta(seconds=lag),
        "stale_cutoff": now - timedelta(seconds=stale),
    }
    breaches = []
    with connection.cursor() as cursor:
        for name, sql, template in CHECKS:
            cursor.execute(sql, params if "%(" in sql else None)
            for row in cursor.fetchall():
                breaches.append(Breach(name, template.format(*row)))
    old_holds = list(
        Hold.objects.filter(
            status=Hold.Status.OPEN, created_at__lt=params["stale_cutoff"], usage__isnull=True
        )
        .order_by("pk")
        .values_list("pk", "request_id", "amount", "created_at")
    )
    if old_holds:
        running = holds_in_flight()
        if running is None:
            logger.warning(
                "%s hold(s) open over %s s could not be checked: the requests in flight "
                "could not be read",
                len(old_holds),
                stale,
            )
        else:
            breaches += [
                Breach(
                    "hold_left_open",
                    f"hold {hold_id} ({request_id}, {amount} micro-USD) open for "
                    f"{int((now - created).total_seconds())} s with no request in flight",
                )
                for hold_id, request_id, amount, created in old_holds
                if hold_id not in running
            ]
    return breaches
