import ipaddress
from decimal import Decimal

from django import forms

from accounts.models import ApiKey
from accounts.services import KeyPolicyError
from core.money import COUNT_MAX, micro_to_usd, usd_to_micro


class DateTimeLocalInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self, **kwargs):
        super().__init__(format="%Y-%m-%dT%H:%M", **kwargs)


class ApiKeyForm(forms.Form):
    """Name, allowed models and limits of a key; money limits in USD."""

    name = forms.CharField(max_length=100)
    allowed_models = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every model of your price group.",
    )
    rpm_limit = forms.IntegerField(
        label="Requests / minute", required=False, min_value=1, max_value=COUNT_MAX
    )
    tpm_limit = forms.IntegerField(
        label="Tokens / minute", required=False, min_value=1, max_value=COUNT_MAX
    )
    concurrency_limit = forms.IntegerField(
        label="Concurrent requests", required=False, min_value=1, max_value=COUNT_MAX
    )
    daily_spend = forms.DecimalField(
        label="Spend limit / day (USD)",
        required=False,
        min_value=Decimal("0.000001"),
        max_digits=14,
        decimal_places=6,
    )
    monthly_spend = forms.DecimalField(
        label="Spend limit / month (USD)",
        required=False,
        min_value=Decimal("0.000001"),
        max_digits=14,
        decimal_places=6,
    )
    expires_at = forms.DateTimeField(
        label="Expires",
        required=False,
        widget=DateTimeLocalInput(),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
        help_text="UTC. Empty: never.",
    )
    ip_allowlist = forms.CharField(
        label="Allowed client addresses",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="One address or CIDR range per line. Empty: any address.",
    )

    def __init__(self, *args, models: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        choices = self.fields["allowed_models"]
        assert isinstance(choices, forms.MultipleChoiceField)
        choices.choices = [(m, m) for m in models]

    def clean_ip_allowlist(self) -> list[str]:
        entries = [
            line.strip() for line in self.cleaned_data["ip_allowlist"].splitlines() if line.strip()
        ]
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise forms.ValidationError(
                    f"“{entry}” is not an IP address or CIDR range."
                ) from None
        return entries

    def refused(self, exc: "KeyPolicyError") -> None:
        """Show a policy the service refused on the fields it names."""
        for field, message in exc.errors.items():
            self.add_error(field if field in self.fields else None, message)

    def policy(self) -> dict:
        """The cleaned values as ``ApiKey`` fields (micro-USD for money)."""
        data = self.cleaned_data
        return {
            "name": data["name"],
            "allowed_models": sorted(data["allowed_models"]),
            "rpm_limit": data["rpm_limit"],
            "tpm_limit": data["tpm_limit"],
            "concurrency_limit": data["concurrency_limit"],
            "daily_spend_limit": usd_to_micro(data["daily_spend"]) if data["daily_spend"] else None,
            "monthly_spend_limit": usd_to_micro(data["monthly_spend"])
            if data["monthly_spend"]
            else None,
            "expires_at": data["expires_at"],
            "ip_allowlist": data["ip_allowlist"],
        }

    @staticmethod
    def initial_for(key: ApiKey) -> dict:
        return {
            "name": key.name,
            "allowed_models": key.allowed_models,
            "rpm_limit": key.rpm_limit,
            "tpm_limit": key.tpm_limit,
            "concurrency_limit": key.concurrency_limit,
            "daily_spend": micro_to_usd(key.daily_spend_limit) if key.daily_spend_limit else None,
            "monthly_spend": micro_to_usd(key.monthly_spend_limit)
            if key.monthly_spend_limit
            else None,
            "expires_at": key.expires_at,
            "ip_allowlist": "\n".join(key.ip_allowlist),
        }


class RedeemForm(forms.Form):
    code = forms.CharField(
        label="Redemption code",
        max_length=40,
        widget=forms.TextInput(
            attrs={"placeholder": "TG-XXXX-XXXX-XXXX-XXXX", "autocomplete": "off"}
        ),
    )


class LowBalanceForm(forms.Form):
    threshold = forms.DecimalField(
        label="Email me when the balance falls below (USD)",
        required=False,
        min_value=Decimal(0),
        max_digits=14,
        decimal_places=6,
        help_text="Empty: no alert. One email each time the balance crosses it.",
    )
