from decimal import Decimal

import factory
from django.contrib.auth import get_user_model

from accounts.models import Account, ApiKey
from accounts.services import account_create, api_key_create
from billing.models import ModelPrice, PriceGroup
from billing.services import account_credit, model_price_set
from relay.models import Channel


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("pw-for-tests-1")


class PriceGroupFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PriceGroup

    name = factory.Sequence(lambda n: f"group-{n}")


class ModelPriceFactory(factory.django.DjangoModelFactory):
    """A price version made through the service. ``components`` gives its components;
    otherwise the per-token shorthand (USD per 1M tokens: ``input_per_m``,
    ``output_per_m``, ``cache_read_per_m``, ``cache_write_per_m``,
    ``cache_write_1h_per_m``, ``reasoning_per_m``; ``request_fee`` per request)."""

    class Meta:
        model = ModelPrice

    group = factory.SubFactory(PriceGroupFactory)
    model = "gpt-4o-mini"

    @classmethod
    def _create(cls, model_class, *, group, model, components=None, mode="chat", **kw):
        if components is None:
            rates = {
                "input": kw.pop("input_per_m", Decimal("0.15")),
                "output": kw.pop("output_per_m", Decimal("0.60")),
                "cache_read": kw.pop("cache_read_per_m", None),
                "cache_write": kw.pop("cache_write_per_m", None),
                "cache_write_1h": kw.pop("cache_write_1h_per_m", None),
                "reasoning": kw.pop("reasoning_per_m", None),
                "request": kw.pop("request_fee", None),
            }
            components = [
                {"unit": unit, "rate": rate}
                for unit, rate in rates.items()
                if rate is not None and not (unit == "request" and Decimal(rate) == 0)
            ]
        return model_price_set(
            group_id=group.pk, model=model, components=components, mode=mode, **kw
        )


class AccountFactory(factory.django.DjangoModelFactory):
    """An account made through the service (so it has its ledger account), with an
    optional opening top-up in micro-USD."""

    class Meta:
        model = Account

    name = factory.Sequence(lambda n: f"account-{n}")
    price_group = factory.SubFactory(PriceGroupFactory)
    overdraft_limit = 0

    @classmethod
    def _create(cls, model_class, *, name, price_group, overdraft_limit=0, credit=0, **kw):
        account = account_create(
            name=name, price_group=price_group, overdraft_limit=overdraft_limit
        )
        if credit:
            account_credit(account=account, amount=credit, memo="test credit")
            account.refresh_from_db()
        return account


class ApiKeyFactory(factory.django.DjangoModelFactory):
    """The created key carries its one-time secret as ``.secret``."""

    class Meta:
        model = ApiKey

    account = factory.SubFactory(AccountFactory)
    name = factory.Sequence(lambda n: f"key-{n}")

    @classmethod
    def _create(cls, model_class, *, account, name, **kw):
        key, secret = api_key_create(account=account, name=name, **kw)
        key.secret = secret
        return key


class ChannelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Channel

    name = factory.Sequence(lambda n: f"channel-{n}")
    type = "openai"
    base_url = "http://127.0.0.1:9/v1"
    served_models = factory.LazyFunction(lambda: ["gpt-4o-mini"])
    api_key = "sk-upstream-secret-0123456789"

    @classmethod
    def _create(cls, model_class, *args, api_key="", **kwargs):
        channel = model_class(**kwargs)
        channel.api_key = api_key
        channel.save()
        return channel
