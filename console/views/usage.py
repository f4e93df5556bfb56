"""The console's usage log and its CSV export."""

import base64
from datetime import UTC, datetime, time

from django import forms
from django.core.handlers.asgi import ASGIRequest
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render

from accounts.models import Account
from console.auth import member_required
from usage.models import UsageRecord
from usage.selectors import usage_csv_stream, usage_records

PAGE_SIZE = 50


class UsageFilterForm(forms.Form):
    key = forms.TypedChoiceField(required=False, coerce=int, empty_value=None)
    model = forms.CharField(required=False, max_length=200)
    status = forms.ChoiceField(
        required=False, choices=[("", "Any status"), *UsageRecord.Status.choices]
    )
    start = forms.DateField(
        label="From", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    end = forms.DateField(
        label="To", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )

    def __init__(self, *args, account: Account, **kwargs):
        super().__init__(*args, **kwargs)
        keys = self.fields["key"]
        assert isinstance(keys, forms.ChoiceField)
        keys.choices = [("", "Any key")] + [
            (k.pk, f"{k.name} ({k.display})") for k in account.api_keys.order_by("name")
        ]

    def filters(self) -> dict:
        data = self.cleaned_data if self.is_valid() else {}
        return {
            "key": data.get("key"),
            "model": data.get("model") or None,
            "status": data.get("status") or None,
            # Whole UTC days, the end day included.
            "start": datetime.combine(data["start"], time.min, UTC) if data.get("start") else None,
            "end": datetime.combine(data["end"], time.max, UTC) if data.get("end") else None,
        }


def _cursor(record: UsageRecord) -> str:
    raw = f"{record.created_at.isoformat()}|{record.pk}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _uncursor(value: str) -> tuple[datetime, int] | None:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        moment, pk = raw.rsplit("|", 1)
        return datetime.fromisoformat(moment), int(pk)
    except (ValueError, UnicodeDecodeError):
        return None


@member_required
def usage_log(request: HttpRequest, account: Account) -> HttpResponse:
    form = UsageFilterForm(request.GET or None, account=account)
    records = usage_records(account_ids=[account.pk], **form.filters()).select_related("api_key")
    # Keyset pagination: "older than this row" stays fast at any depth.
    after = _uncursor(request.GET.get("before", ""))
    if after is not None:
        moment, pk = after
        records = records.filter(Q(created_at__lt=moment) | Q(created_at=moment, pk__lt=pk))
    rows = list(records.order_by("-created_at", "-pk")[: PAGE_SIZE + 1])
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    query = request.GET.copy()
    query.pop("before", None)
    older = None
    if more:
        query["before"] = _cursor(rows[-1])
        older = query.urlencode()
        query.pop("before")
    return render(
        request,
        "console/usage.html",
        {
            "form": form,
            "rows": rows,
            "older": older,
            "paged": after is not None,
            "filters": query.urlencode(),
        },
    )


@member_required
def usage_export(request: HttpRequest, account: Account) -> StreamingHttpResponse:
    form = UsageFilterForm(request.GET or None, account=account)
    records = usage_records(account_ids=[account.pk], **form.filters())
    content = usage_csv_stream(queryset=records, asynchronous=isinstance(request, ASGIRequest))
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="tollgate-usage-{stamp}.csv"'
    return response
