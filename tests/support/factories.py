from decimal import Decimal

import factory
from django.contrib.auth import get_user_model

from accounts.models import Account, ApiKey
from accounts.services import account_create, api_key_create
from billing.models import ModelPrice, PriceGroup
from billing.services import account_credit
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
    class Meta:
        model = ModelPrice

    group = factory.SubFactory(PriceGroupFactory)
    model = "gpt-4o-mini"
    input_per_m = Decimal("0.15")
    output_per_m = Decimal("0.60")


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
