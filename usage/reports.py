"""Reads on the daily roll-up: a few rows per day, whatever the traffic."""

from datetime import UTC, date, datetime, timedelta

from django.db.models import Sum

from core.money import PICO_PER_USD, pico_to_micro

from .models import UsageDaily, UsageRecord

_OTHER = "other models"


def _today() -> date:
    return datetime.now(UTC).date()


def spend_totals(*, account_id: int) -> dict[str, int]:
    """Spend (micro-USD, the exact sums rounded) and requests today and this month
    (UTC), settled usage."""
    today = _today()
    rows = UsageDaily.objects.filter(account_id=account_id, day__gte=today.replace(day=1))
    month = rows.aggregate(cost=Sum("cost_pico"), requests=Sum("requests"))
    day = rows.filter(day=today).aggregate(cost=Sum("cost_pico"), requests=Sum("requests"))
    return {
        "today": pico_to_micro(day["cost"] or 0),
        "month": pico_to_micro(month["cost"] or 0),
        "requests_today": day["requests"] or 0,
        "requests_month": month["requests"] or 0,
    }


def daily_spend_by_model(*, account_id: int | None, days: int = 30, top: int = 6) -> dict:
    """Spend per day and model over the last ``days`` days, as chart series
    (USD floats, for drawing only: the ledger keeps the exact figures)."""
    start = _today() - timedelta(days=days - 1)
    rows = UsageDaily.objects.filter(day__gte=start)
    if account_id is not None:
        rows = rows.filter(account_id=account_id)
    per = rows.values("day", "model").annotate(cost=Sum("cost_pico"))
    totals: dict[str, int] = {}
    for row in per:
        totals[row["model"]] = totals.get(row["model"], 0) + row["cost"]
    leaders = [m for m, _ in sorted(totals.items(), key=lambda kv: -kv[1])[:top]]
    labels = [(start + timedelta(days=i)) for i in range(days)]
    index = {d: i for i, d in enumerate(labels)}
    series: dict[str, list[float]] = {}
    for row in per:
        name = row["model"] if row["model"] in leaders else _OTHER
        values = series.setdefault(name, [0.0] * days)
        values[index[row["day"]]] += row["cost"] / PICO_PER_USD
    order = [m for m in leaders if m in series] + ([_OTHER] if _OTHER in series else [])
    return {
        "type": "bar",
        "stacked": True,
        "prefix": "$",
        "labels": [d.strftime("%b %d") for d in labels],
        "series": [{"label": name, "data": [round(v, 6) for v in series[name]]} for name in order],
    }


def recent_requests(*, account_id: int, limit: int = 8):
    return (
        UsageRecord.objects.filter(account_id=account_id)
        .select_related("api_key")
        .order_by("-created_at", "-id")[:limit]
    )


def overview(*, days: int = 30) -> list[dict]:
    """Per day: requests, errors, revenue (what customers were charged for usage),
    upstream cost and margin (micro-USD, the exact sums rounded), from the roll-up."""
    start = _today() - timedelta(days=days - 1)
    rows = {
        r["day"]: r
        for r in UsageDaily.objects.filter(day__gte=start)
        .values("day")
        .annotate(
            requests=Sum("requests"),
            errors=Sum("errors"),
            revenue=Sum("cost_pico"),
            upstream=Sum("upstream_cost_pico"),
        )
    }
    result = []
    for i in range(days):
        day = start + timedelta(days=i)
        r = rows.get(day, {})
        revenue = pico_to_micro(r.get("revenue") or 0)
        upstream = pico_to_micro(r.get("upstream") or 0)
        result.append(
            {
                "day": day,
                "requests": r.get("requests") or 0,
                "errors": r.get("errors") or 0,
                "revenue": revenue,
                "upstream_cost": upstream,
                "margin": revenue - upstream,
            }
        )
    return result
