"""Importing LiteLLM's price catalogue: what is read, the diff an operator reviews, the
versions an import publishes (and what they bill), the command and the admin page.

``data/litellm_catalogue.json`` holds entries as LiteLLM's
``model_prices_and_context_window.json`` writes them."""

import json
from datetime import timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command, execute_from_command_line
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone

from billing import catalogue as catalogue_module
from billing.catalogue import CatalogueError, catalogue_import, catalogue_parse, catalogue_prices
from billing.models import ModelPrice
from billing.selectors import price_current, prices_current
from core.money import PICO_PER_USD, Units, images_of, tool_calls_of
from tests.support.factories import ModelPriceFactory, PriceGroupFactory, UserFactory

pytestmark = pytest.mark.django_db

FILE = Path(__file__).parent / "data" / "litellm_catalogue.json"
MODELS = [
    "ai21.jamba-1-5-mini-v1:0",
    "anthropic/claude-haiku-4-5",
    "anthropic/claude-sonnet-4-5",
    "claude-sonnet-4-5",
    "dall-e-3",
    "gemini-2.5-pro",
    "gpt-4o",
    "o3-deep-research",
    "rerank-english-v3.0",
    "text-embedding-3-small",
    "tts-1",
    "whisper-1",
]


def catalogue() -> dict:
    return catalogue_parse(text=FILE.read_bytes())


def rates(components) -> dict:
    """{(unit, conditions...): rate} of components."""
    return {
        (c.unit, *(f"{k}={v}" for k, v in sorted(c.conditions().items()))): c.rate
        for c in components
    }


def usd(pico: int) -> Decimal:
    return Decimal(pico) / PICO_PER_USD


def D(text: str) -> Decimal:
    return Decimal(text)


# -- reading -------------------------------------------------------------------------


def test_each_litellm_key_becomes_its_component_at_the_exact_rate():
    reading = catalogue_prices(catalogue=catalogue())
    by_model = {m.model: m for m in reading.models}
    assert sorted(by_model) == MODELS

    assert rates(by_model["gpt-4o"].components) == {
        ("input",): D("2.5"),
        ("output",): D("10"),
        ("cache_read",): D("1.25"),
        ("input", "service_tier=flex"): D("1.25"),
        ("output", "service_tier=flex"): D("5"),
        ("input", "service_tier=priority"): D("4.25"),
        ("output", "service_tier=priority"): D("17"),
        ("cache_read", "service_tier=priority"): D("2.125"),
        # USD 0.035 per search at the medium context size, per 1,000 calls
        ("tool_call", "tool=web_search"): D("35"),
    }
    assert rates(by_model["claude-sonnet-4-5"].components) == {
        ("input",): D("3"),
        ("output",): D("15"),
        ("cache_read",): D("0.3"),
        ("cache_write",): D("3.75"),
        ("cache_write_1h",): D("6"),
        ("input", "above=200000"): D("6"),
        ("output", "above=200000"): D("22.5"),
        ("cache_read", "above=200000"): D("0.6"),
        ("cache_write", "above=200000"): D("7.5"),
        ("cache_write_1h", "above=200000"): D("12"),
        ("tool_call", "tool=web_search"): D("10"),
    }
    assert rates(by_model["gemini-2.5-pro"].components) == {
        ("input",): D("1.25"),
        ("output",): D("10"),
        ("cache_read",): D("0.125"),
        ("audio_input",): D("1.25"),
        ("reasoning",): D("10"),
        ("input", "above=200000"): D("2.5"),
        ("output", "above=200000"): D("15"),
        ("cache_read", "above=200000"): D("0.25"),
    }
    # Each size (and quality) of dall-e-3 folded into the model, per image.
    assert by_model["dall-e-3"].mode == "image_generation"
    assert rates(by_model["dall-e-3"].components) == {
        ("image", "size=1024x1024"): D("0.04"),
        ("image", "quality=standard", "size=1024x1024"): D("0.04"),
        ("image", "quality=standard", "size=1024x1792"): D("0.08"),
        ("image", "quality=hd", "size=1024x1024"): D("0.08"),
        ("image", "quality=hd", "size=1024x1792"): D("0.12"),
    }
    assert rates(by_model["whisper-1"].components) == {("audio_second",): D("0.0001")}
    assert rates(by_model["tts-1"].components) == {("character",): D("15")}
    # A free token kind is kept for input and output only.
    assert rates(by_model["rerank-english-v3.0"].components) == {
        ("search_unit",): D("0.002"),
        ("input",): D("0"),
        ("output",): D("0"),
    }
    assert rates(by_model["text-embedding-3-small"].components) == {
        ("input",): D("0.02"),
        ("output",): D("0"),
    }
    assert by_model["o3-deep-research"].mode == "chat"  # LiteLLM's "responses"


def test_what_cannot_be_imported_is_said_with_a_reason():
    reading = catalogue_prices(catalogue=catalogue())
    skipped = {s.key: s.reason for s in reading.skipped}
    assert skipped == {
        "_comment": "not an object",
        "sora-2": "mode `video_generation` is not one Tollgate prices",
        # Hosting time is not seconds of audio.
        "sagemaker/meta-textgeneration-llama-2-7b": "no cost this importer can price",
    }
    warnings = "\n".join(reading.warnings)
    assert (
        "ai21.jamba-1-5-mini-v1:0: cache_read 0.033333333 per 1M tokens "
        "(`cache_read_input_token_cost`) has more than 6 decimals; rounded to 0.033333"
    ) in warnings
    assert (
        "hd/1024-x-1792/dall-e-3: input_cost_per_pixel 0.00000006539 x 1024 x 1792 = "
        "0.11999117312 USD per image, rounded to 0.12"
    ) in warnings
    assert "input_cost_per_token_batches (2 models)" in warnings
    assert "sample_spec" not in warnings and "sample_spec" not in skipped


def test_odd_values_are_reported_and_not_imported():
    reading = catalogue_prices(
        catalogue={
            "m": {
                "mode": "chat",
                "input_cost_per_token": Decimal("1e-06"),
                "output_cost_per_token": Decimal("-1e-06"),
                "cache_read_input_token_cost": 0,
                "output_cost_per_reasoning_token": "2e-06",
                "input_cost_per_request": Decimal("1e15"),
            }
        }
    )
    assert [rates(m.components) for m in reading.models] == [{("input",): D("1")}]
    assert reading.warnings == (
        "m: `output_cost_per_token` is negative; ignored",
        "m: cache_read is 0 in the catalogue; a zero rate is imported for input and output "
        "only, so it is billed at the input rate",
        "m: `output_cost_per_reasoning_token` is not a number ('2e-06'); ignored",
        "m: `input_cost_per_request` is too large to be a price; ignored",
    )


def test_filters_and_the_stripped_prefix():
    reading = catalogue_prices(
        catalogue=catalogue(), models=["claude-*"], provider="anthropic", strip_prefix=True
    )
    by_model = {m.model: m for m in reading.models}
    assert sorted(by_model) == ["claude-haiku-4-5", "claude-sonnet-4-5"]
    # The entry that already had the name wins over the prefixed one.
    assert by_model["claude-sonnet-4-5"].keys == ("claude-sonnet-4-5",)
    assert [(s.key, s.reason) for s in reading.skipped] == [
        (
            "anthropic/claude-sonnet-4-5",
            "`claude-sonnet-4-5` is imported from `claude-sonnet-4-5`",
        )
    ]
    # A pattern matches the imported name as well as the catalogue key.
    reading = catalogue_prices(catalogue=catalogue(), models=["dall-e-3"])
    assert [m.model for m in reading.models] == ["dall-e-3"]
    assert len(reading.models[0].components) == 5


def test_a_file_that_is_not_a_catalogue_is_refused():
    for text, message in [
        ("{", "not valid JSON"),
        ("[1, 2]", "a catalogue is a JSON object"),
        ('{"m": {"input_cost_per_token": NaN}}', "NaN is not a price"),
    ]:
        with pytest.raises(CatalogueError, match=message):
            catalogue_parse(text=text)


# -- the diff and the import -----------------------------------------------------------


def test_dry_run_reports_new_changed_and_unchanged_and_writes_nothing():
    group = PriceGroupFactory()
    ModelPriceFactory(
        group=group,
        model="gpt-4o",
        components=catalogue_prices(catalogue=catalogue(), models=["gpt-4o"]).models[0].components,
    )
    ModelPriceFactory(
        group=group,
        model="tts-1",
        mode="audio_speech",
        components=[{"unit": "character", "rate": "12.00"}, {"unit": "request", "rate": "0.01"}],
    )
    versions = ModelPrice.objects.count()

    result = catalogue_import(group=group, catalogue=catalogue(), dry_run=True)

    assert ModelPrice.objects.count() == versions and result.published == 0
    assert [m.model for m in result.unchanged] == ["gpt-4o"]
    assert [m.model for m in result.changed] == ["tts-1"]
    assert [m.model for m in result.new] == [m for m in MODELS if m not in ("gpt-4o", "tts-1")]
    assert result.changed[0].text() == (
        "~ tts-1: request removed (was 0.01); character 12.00 -> 15.00"
    )
    lines = result.lines()
    assert (
        "+ claude-sonnet-4-5: input 3.00, input above 200k 6.00, cache_read 0.30, "
        "cache_read above 200k 0.60, cache_write 3.75, cache_write above 200k 7.50, "
        "cache_write_1h 6.00, cache_write_1h above 200k 12.00, output 15.00, "
        "output above 200k 22.50 per 1M tokens; tool_call web_search 10.00 per 1K calls"
    ) in lines
    assert "+ whisper-1 (audio_transcription): audio_second 0.0001 per second" in lines
    assert "= 1 unchanged" in lines
    assert "! skipped sora-2: mode `video_generation` is not one Tollgate prices" in lines
    assert result.summary() == (
        f"Dry run for {group.name}: 10 new, 1 changed, 1 unchanged, 3 skipped; nothing was written."
    )


def test_import_publishes_versions_that_bill_exactly():
    group = PriceGroupFactory()
    result = catalogue_import(group=group, catalogue=catalogue(), dry_run=False)
    assert result.published == len(MODELS) == ModelPrice.objects.filter(group=group).count()
    prices = prices_current(group_id=group.pk)

    def cost(model: str, **units) -> Decimal:
        return usd(prices[model].cost(Units(**units)))

    # 1,000 tokens written to the one-hour cache at USD 6 per 1M.
    assert cost("claude-sonnet-4-5", cache_write_1h=1_000) == D("0.006")
    # A 250k-token prompt is above the 200k tier: 250,000 x 6 + 1,000 x 22.50 per 1M.
    assert cost("claude-sonnet-4-5", input=250_000, output=1_000) == D("1.5225")
    # Flex: 1,000 x 1.25 + 1,000 x 5 per 1M; priority cache reads at 2.125 per 1M.
    assert cost("gpt-4o", input=1_000, output=1_000, service_tier="flex") == D("0.00625")
    assert cost("gpt-4o", cache_read=10_000, service_tier="priority") == D("0.02125")
    # Two web searches at USD 35 per 1K calls, on top of 100 input tokens.
    searches = tool_calls_of({"web_search": 2})
    assert cost("gpt-4o", input=100, tool_calls=searches) == D("0.07025")
    # Gemini above 200k: 300,000 x 2.50 + 2,000 reasoning x 10 per 1M.
    assert cost("gemini-2.5-pro", input=300_000, reasoning=2_000) == D("0.77")
    assert cost("dall-e-3", images=images_of({("1024x1792", "hd"): 2})) == D("0.24")
    assert cost("whisper-1", audio_ms=61_500) == D("0.00615")
    assert cost("tts-1", characters=1_000) == D("0.015")
    assert cost("rerank-english-v3.0", search_units=3, input=5_000) == D("0.006")
    assert prices["tts-1"].mode == "audio_speech"

    again = catalogue_import(group=group, catalogue=catalogue(), dry_run=False)
    assert again.published == 0 and len(again.unchanged) == len(MODELS)
    assert ModelPrice.objects.filter(group=group).count() == len(MODELS)


def test_a_changed_rate_publishes_a_version_of_that_model_only():
    group = PriceGroupFactory()
    catalogue_import(group=group, catalogue=catalogue(), dry_run=False)
    before = price_current(group_id=group.pk, model="gpt-4o")
    edited = catalogue()
    edited["gpt-4o"]["output_cost_per_token"] = Decimal("1.2e-05")

    result = catalogue_import(group=group, catalogue=edited, dry_run=False)

    assert result.published == 1
    assert [m.text() for m in result.changed] == ["~ gpt-4o: output 10.00 -> 12.00"]
    assert ModelPrice.objects.filter(group=group, model="gpt-4o").count() == 2
    assert ModelPrice.objects.filter(group=group).count() == len(MODELS) + 1
    after = price_current(group_id=group.pk, model="gpt-4o")
    assert before is not None and after is not None and after.price_id != before.price_id
    assert usd(after.cost(Units(output=1_000_000))) == D("12")


def test_a_later_start_leaves_todays_prices_in_effect():
    group = PriceGroupFactory()
    ModelPriceFactory(group=group, model="gpt-4o", input_per_m="3.00", output_per_m="12.00")
    start = timezone.now() + timedelta(days=7)

    result = catalogue_import(
        group=group, catalogue=catalogue(), models=["gpt-4o"], dry_run=False, effective_from=start
    )

    assert result.published == 1
    assert "from " in result.summary()
    assert usd(price_current(group_id=group.pk, model="gpt-4o").cost(Units(input=10**6))) == 3
    later = price_current(group_id=group.pk, model="gpt-4o", at=start)
    assert usd(later.cost(Units(input=10**6))) == D("2.5")
    # Importing the same file for the same start finds that version and adds nothing.
    again = catalogue_import(
        group=group, catalogue=catalogue(), models=["gpt-4o"], dry_run=False, effective_from=start
    )
    assert again.published == 0
    with pytest.raises(CatalogueError, match="later requests only"):
        catalogue_import(
            group=group,
            catalogue=catalogue(),
            dry_run=False,
            effective_from=timezone.now() - timedelta(minutes=1),
        )


# -- the command -------------------------------------------------------------------------


def run(*args: str) -> str:
    out = StringIO()
    call_command("price_import", *args, stdout=out)
    return out.getvalue()


def test_command_shows_the_diff_and_imports():
    group = PriceGroupFactory(name="retail")
    ModelPriceFactory(group=group, model="gpt-4o", input_per_m="2.50", output_per_m="10.00")

    out = run(str(FILE), "--group", "retail", "--dry-run", "--model", "gpt-4o", "tts-*")
    assert out.splitlines() == [
        "+ tts-1 (audio_speech): character 15.00 per 1M characters",
        "~ gpt-4o: input flex added at 1.25; input priority added at 4.25; "
        "cache_read added at 1.25; cache_read priority added at 2.125; "
        "output flex added at 5.00; output priority added at 17.00; "
        "tool_call web_search added at 35.00",
        "! keys no Tollgate unit stands for, not imported: "
        "input_cost_per_token_batches (1 model), output_cost_per_token_batches (1 model)",
        "Dry run for retail: 1 new, 1 changed, 0 unchanged, 0 skipped; nothing was written.",
    ]
    assert ModelPrice.objects.filter(group=group).count() == 1

    out = run(str(FILE), "--group", str(group.pk), "--provider", "openai")
    assert out.splitlines()[-1] == (
        "Published 6 price versions in retail (5 new, 1 changed, 0 unchanged, 1 skipped)."
    )
    assert ModelPrice.objects.filter(group=group).count() == 7

    out = run(str(FILE), "--group", "retail", "--provider", "openai", "-v", "2")
    assert "= tts-1 (audio_speech): character 15.00 per 1M characters" in out.splitlines()
    assert out.splitlines()[-1].startswith("Published 0 price versions")

    start = (timezone.now() + timedelta(days=1)).replace(microsecond=0)
    run(
        str(FILE), "--group", "retail", "--model", "gemini-*", "--effective-from", start.isoformat()
    )
    assert ModelPrice.objects.get(group=group, model="gemini-2.5-pro").effective_from == start


def test_command_refuses_a_missing_file_bad_json_and_an_unknown_group(
    tmp_path, capsys, monkeypatch
):
    PriceGroupFactory(name="retail")
    # Run from the command line, a command closes the database connections when it
    # ends; here that one connection holds the test's transaction.
    monkeypatch.setattr("django.core.management.base.connections.close_all", lambda: None)
    broken = tmp_path / "broken.json"
    broken.write_text('{"gpt-4o": {"input_cost_per_token": 2.5e-06,}}')

    for args, message in [
        ([str(tmp_path / "nope.json"), "--group", "retail"], "nope.json: no such file"),
        ([str(broken), "--group", "retail"], "broken.json: not valid JSON"),
        ([str(FILE), "--group", "wholesale"], "no price group named or numbered 'wholesale'"),
        ([str(FILE), "--group", "retail", "--effective-from", "soon"], "is not an ISO date"),
    ]:
        with pytest.raises(CommandError, match=message):
            run(*args)
        with pytest.raises(SystemExit) as exited:
            execute_from_command_line(["manage.py", "price_import", *args])
        assert exited.value.code == 1
        assert message in capsys.readouterr().err
    assert not ModelPrice.objects.exists()


# -- the admin page ------------------------------------------------------------------------


@pytest.fixture
def staff(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def upload(content: bytes = b"", name: str = "model_prices.json") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content or FILE.read_bytes(), "application/json")


def test_admin_page_previews_then_imports(staff):
    group = PriceGroupFactory(name="retail")
    url = reverse("admin:billing_pricegroup_import", args=[group.pk])
    assert url in staff.get(reverse("admin:billing_pricegroup_change", args=[group.pk])).text

    page = staff.get(url)
    assert page.status_code == 200
    assert "Import a price catalogue into retail" in page.text

    page = staff.post(url, {"catalogue": upload(), "models": "gpt-4o, tts-*", "_preview": "1"})
    assert page.status_code == 200
    assert "Dry run for retail: 2 new, 0 changed" in page.text
    assert "+ tts-1 (audio_speech): character 15.00 per 1M characters" in page.text
    assert not ModelPrice.objects.exists()

    response = staff.post(
        url, {"catalogue": upload(), "provider": "anthropic", "strip_prefix": "on", "_import": "1"}
    )
    assert response.status_code == 302
    assert response.url == reverse("admin:billing_pricegroup_change", args=[group.pk])
    assert sorted(ModelPrice.objects.filter(group=group).values_list("model", flat=True)) == [
        "claude-haiku-4-5",
        "claude-sonnet-4-5",
    ]
    page = staff.get(response.url)
    assert "Published 2 price versions in retail" in page.text
    assert "1 entry skipped, 0 warnings" in page.text


def test_admin_page_explains_a_bad_file(staff, monkeypatch):
    group = PriceGroupFactory()
    url = reverse("admin:billing_pricegroup_import", args=[group.pk])

    page = staff.post(url, {"catalogue": upload(b'{"gpt-4o": '), "_import": "1"})
    assert page.status_code == 200 and "This file is not valid JSON" in page.text

    page = staff.post(url, {"catalogue": upload(json.dumps([1]).encode()), "_preview": "1"})
    assert page.status_code == 200 and "a catalogue is a JSON object" in page.text

    monkeypatch.setattr(catalogue_module, "MAX_BYTES", 100)
    page = staff.post(url, {"catalogue": upload(), "_preview": "1"})
    assert page.status_code == 200 and "The file is larger than" in page.text

    yesterday = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%d %H:%M")
    page = staff.post(url, {"catalogue": upload(), "effective_from": yesterday, "_import": "1"})
    assert page.status_code == 200 and "later requests only" in page.text
    assert not ModelPrice.objects.exists()


def test_admin_page_is_for_staff_only(client):
    group = PriceGroupFactory()
    url = reverse("admin:billing_pricegroup_import", args=[group.pk])
    client.force_login(UserFactory())
    for response in [client.get(url), client.post(url, {"catalogue": upload(), "_import": "1"})]:
        assert response.status_code == 302 and response.url.startswith("/admin/login/")
    assert not ModelPrice.objects.exists()
