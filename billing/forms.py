from decimal import Decimal

from django import forms


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
