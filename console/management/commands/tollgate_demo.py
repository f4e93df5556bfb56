"""Create the embedded demo: an admin, a demo account with credit, prices, the mock
channel and an API key, then print how to call the relay.

Safe to run again: existing rows are kept. The demo key's secret is kept in
``var/demo.json`` (a local, git-ignored file; ``TOLLGATE_STATE_DIR`` moves it) so
later runs can print it again; if that key was revoked a new one is made.
"""

import json
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.keys import key_hash
from accounts.models import Account, ApiKey, Membership
from accounts.services import account_create, api_key_create, membership_add
from billing.models import ModelPrice, PriceGroup
from billing.pricing import token_components
from billing.services import account_credit, model_price_set
from relay.models import Channel
from relay.providers.mock import MockProvider

DEMO_PRICES = {
    # model: input, output, cache read, cache write, reasoning (USD per 1M tokens)
    "gpt-4o-mini": ("0.15", "0.60", "0.075", None, None),
    "gpt-4o": ("2.50", "10.00", "1.25", None, None),
    "o4-mini": ("1.10", "4.40", "0.275", None, "4.40"),
    "claude-sonnet-4": ("3.00", "15.00", "0.30", "3.75", None),
    "text-embedding-3-small": ("0.02", "0", None, None, None),
    "gpt-3.5-turbo-instruct": ("1.50", "2.00", None, None, None),
}
DEMO_MODES = {
    "text-embedding-3-small": ModelPrice.Mode.EMBEDDING,
    "gpt-3.5-turbo-instruct": ModelPrice.Mode.COMPLETION,
}
# The media models, at their list prices, each billed in its own unit.
_DALL_E_3 = [
    # (size, quality, USD per image)
    ("1024x1024", "standard", "0.04"),
    ("1792x1024", "standard", "0.08"),
    ("1024x1792", "standard", "0.08"),
    ("1024x1024", "hd", "0.08"),
    ("1792x1024", "hd", "0.12"),
    ("1024x1792", "hd", "0.12"),
]
DEMO_MEDIA_PRICES = {
    "dall-e-3": (
        ModelPrice.Mode.IMAGE_GENERATION,
        [{"unit": "image", "rate": r, "size": s, "quality": q} for s, q, r in _DALL_E_3],
    ),
    # USD per 1M tokens: text input, cached text input, image input, image output.
    "gpt-image-1": (
        ModelPrice.Mode.IMAGE_GENERATION,
        [
            {"unit": "input", "rate": "5.00"},
            {"unit": "cache_read", "rate": "1.25"},
            {"unit": "image_input", "rate": "10.00"},
            {"unit": "image_output", "rate": "40.00"},
        ],
    ),
    # $0.006 a minute.
    "whisper-1": (
        ModelPrice.Mode.AUDIO_TRANSCRIPTION,
        [{"unit": "audio_second", "rate": "0.0001"}],
    ),
    # USD per 1M tokens: text input, audio input, text output.
    "gpt-4o-mini-transcribe": (
        ModelPrice.Mode.AUDIO_TRANSCRIPTION,
        [
            {"unit": "input", "rate": "1.25"},
            {"unit": "audio_input", "rate": "3.00"},
            {"unit": "output", "rate": "5.00"},
        ],
    ),
    # USD per 1M characters.
    "tts-1": (ModelPrice.Mode.AUDIO_SPEECH, [{"unit": "character", "rate": "15.00"}]),
    # USD per 1M tokens: text input, audio output (about $0.015 a minute).
    "gpt-4o-mini-tts": (
        ModelPrice.Mode.AUDIO_SPEECH,
        [{"unit": "input", "rate": "0.60"}, {"unit": "audio_output", "rate": "12.00"}],
    ),
    # $2.00 per 1,000 searches.
    "rerank-v3.5": (ModelPrice.Mode.RERANK, [{"unit": "search_unit", "rate": "0.002"}]),
    # Free, and recorded.
    "omni-moderation-latest": (ModelPrice.Mode.MODERATION, [{"unit": "request", "rate": "0"}]),
}
DEMO_MODELS = sorted({*DEMO_PRICES, *DEMO_MEDIA_PRICES})
DEMO_CREDIT = 10_000_000  # $10.00


class Command(BaseCommand):
    help = "Create demo data for the embedded run and print a working key."

    def add_arguments(self, parser):
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")

    def handle(self, *args, base_url: str, **options):
        state_path = Path(settings.TOLLGATE_STATE_DIR) / "demo.json"
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        with transaction.atomic():
            state = self._seed(state)
        # Its own durable posting, after the seed; idempotent, so a run that stopped
        # in between credits the account on the next run, once.
        demo = Account.objects.get(name="Demo")
        account_credit(
            account=demo,
            amount=DEMO_CREDIT,
            memo="Demo credit",
            idempotency_key=f"demo-credit:{demo.pk}",
        )
        state_path.parent.mkdir(parents=True, exist_ok=True)
        state_path.write_text(json.dumps(state, indent=2))
        state_path.chmod(0o600)

        key = state["api_key"]
        out = self.stdout
        out.write("")
        out.write(self.style.SUCCESS("Tollgate demo is ready."))
        out.write(
            f"  Admin:    {base_url}/admin/  (user admin, password {state['admin_password']})"
        )
        out.write(f"  Demo user: demo / {state['demo_password']}")
        if settings.EMAIL_BACKEND.endswith("filebased.EmailBackend"):
            out.write(f"  Mail:     {base_url}/admin/mail/  (files in {settings.EMAIL_FILE_PATH})")
        out.write(f"  API key:  {key}")
        out.write("  Try it:")
        out.write(
            f"    curl -s {base_url}/v1/chat/completions \\\n"
            f"      -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n"
            '      -d \'{"model": "gpt-4o-mini", '
            '"messages": [{"role": "user", "content": "Hello!"}]}\''
        )
        out.write("")

    def _seed(self, state: dict) -> dict:
        User = get_user_model()
        if not User.objects.filter(username="admin").exists():
            state["admin_password"] = secrets.token_urlsafe(9)
            User.objects.create_superuser("admin", "admin@example.com", state["admin_password"])

        group, _ = PriceGroup.objects.get_or_create(
            name="default", defaults={"description": "Standard list prices"}
        )
        for model, (inp, out, cread, cwrite, reason) in DEMO_PRICES.items():
            if not ModelPrice.objects.filter(group=group, model=model).exists():
                model_price_set(
                    group_id=group.pk,
                    model=model,
                    components=token_components(
                        input=inp,
                        output=out,
                        cache_read=cread,
                        cache_write=cwrite,
                        reasoning=reason,
                    ),
                    mode=DEMO_MODES.get(model, ModelPrice.Mode.CHAT),
                )
        for model, (mode, components) in DEMO_MEDIA_PRICES.items():
            if not ModelPrice.objects.filter(group=group, model=model).exists():
                model_price_set(group_id=group.pk, model=model, components=components, mode=mode)

        mock, _ = Channel.objects.get_or_create(
            name="mock",
            defaults={"type": MockProvider.name, "served_models": DEMO_MODELS},
        )
        # A demo made by an older version serves the models added since, too.
        missing = set(DEMO_MODELS) - set(mock.served_models)
        if mock.type == MockProvider.name and missing:
            mock.served_models = sorted({*mock.served_models, *missing})
            mock.save(update_fields=["served_models"])

        account = Account.objects.filter(name="Demo").first()
        if account is None:
            account = account_create(name="Demo", price_group=group)
        if not User.objects.filter(username="demo").exists():
            state["demo_password"] = secrets.token_urlsafe(9)
            user = User.objects.create_user("demo", "demo@example.com", state["demo_password"])
            membership_add(account=account, user=user, role=Membership.Role.OWNER)

        key = state.get("api_key")
        if (
            not key
            or not ApiKey.objects.filter(
                key_hash=key_hash(key), status=ApiKey.Status.ACTIVE
            ).exists()
        ):
            _, state["api_key"] = api_key_create(account=account, name="demo")
        state.setdefault(
            "admin_password", "(set earlier; change with manage.py changepassword admin)"
        )
        state.setdefault("demo_password", "(set earlier)")
        return state
