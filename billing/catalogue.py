"""Import a price catalogue in LiteLLM's ``model_prices_and_context_window.json`` format.

The operator supplies the file; nothing is fetched. Each entry's USD costs become
price components (per-token costs times 1M, per-character costs times 1M, per-call
tool costs times 1K, image sizes folded into their model), read as exact decimals.
A dry run compares the result with the group's prices in effect; an import
publishes one new version per new or changed model, all in one transaction. The
group's multiplier is not applied here: it applies when a request is billed.

Nothing is dropped silently: a rate with more decimals than its unit allows is
rounded half-up and reported, an entry that cannot be priced is listed with the
reason, and the cost keys no unit stands for are counted in a warning.
"""

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from fnmatch import fnmatchcase
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from .models import ModelPrice, PriceComponent, PriceGroup
from .pricing import FALLBACK, UNITS, Component, Price, PriceError, decimal_text
from .selectors import price_book, price_in_book
from .services import components_checked, model_price_set

# An upload larger than this is refused before it is read.
MAX_BYTES = 20 * 1024 * 1024


class CatalogueError(ValueError):
    """A file that is not a catalogue, or an import that cannot be made."""


def catalogue_parse(*, text: str | bytes) -> dict[str, Any]:
    """The catalogue's entries by key, with every number an exact Decimal (a float
    would turn 3.75e-06 into 3.7499999...). Raises CatalogueError."""

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not a price")

    try:
        data = json.loads(text, parse_float=Decimal, parse_constant=no_constants)
    except ValueError as exc:
        raise CatalogueError(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CatalogueError("a catalogue is a JSON object of models by name")
    return data


# -- from LiteLLM's keys to components ------------------------------------------------

# Token costs (USD per token). Each may carry a context tier ("_above_200k_tokens")
# and then a service tier ("_flex", "_priority"), in that order.
_TOKEN_KEYS = {
    "input_cost_per_token": "input",
    "output_cost_per_token": "output",
    "cache_read_input_token_cost": "cache_read",
    "cache_creation_input_token_cost": "cache_write",
    "cache_creation_input_token_cost_above_1hr": "cache_write_1h",
    "output_cost_per_reasoning_token": "reasoning",
    "input_cost_per_audio_token": "audio_input",
    "output_cost_per_audio_token": "audio_output",
    "input_cost_per_image_token": "image_input",
    "output_cost_per_image_token": "image_output",
}
_TOKEN_KEY = re.compile(
    "^(?P<base>"
    + "|".join(re.escape(k) for k in sorted(_TOKEN_KEYS, key=len, reverse=True))
    + r")(?:_above_(?P<thousands>\d+)k_tokens)?(?:_(?P<tier>flex|priority))?$"
)


@dataclass(frozen=True, slots=True)
class _Rule:
    """A non-token cost key: the unit it sets, what its value is multiplied by to be
    USD per the unit's quantum, and the modes it means that unit in."""

    unit: str
    factor: int = 1
    tool: str = ""
    modes: tuple[str, ...] = ()


_OTHER_KEYS = {
    "input_cost_per_request": _Rule("request"),
    "output_cost_per_image": _Rule("image"),
    # Other modes use these for hosting time and chat input, which are not what the
    # audio-second and character units count.
    "input_cost_per_second": _Rule("audio_second", modes=("audio_transcription",)),
    "input_cost_per_character": _Rule("character", 10**6, modes=("audio_speech",)),
    "input_cost_per_query": _Rule("search_unit"),
    "file_search_cost_per_1k_calls": _Rule("tool_call", tool="file_search"),
    "code_interpreter_cost_per_session": _Rule("tool_call", 1000, tool="code_interpreter"),
}
_WEB_SEARCH_KEY = "search_context_cost_per_query"
_PIXEL_KEY = "input_cost_per_pixel"
# Image prices are quoted to the tenth of a cent; a pixel price times the pixels of
# a size lands a hair off it (3.81469e-08 x 1024 x 1024 = 0.03999...).
_IMAGE_DECIMALS = 3

# "hd/1024-x-1792/dall-e-3", "azure/standard/1024-x-1024/dall-e-3": one size (and
# quality) of an image model, priced per pixel or per image.
_SIZED_KEY = re.compile(
    r"^(?P<prefix>(?:[^/]+/)*?)(?:(?P<quality>standard|hd|low|medium|high)/)?"
    r"(?P<width>\d+)-x-(?P<height>\d+)/(?P<model>.+)$"
)

# What the price tables can hold.
_NAME_MAX = ModelPrice._meta.get_field("model").max_length or 0
_RATE_MAX = Decimal(10) ** (
    PriceComponent._meta.get_field("rate").max_digits
    - PriceComponent._meta.get_field("rate").decimal_places
)

_MODES = frozenset(ModelPrice.Mode.values)
# LiteLLM's names for modes Tollgate prices under another name.
_MODE_ALIASES = {"responses": ModelPrice.Mode.CHAT.value}
# Token kinds a free model needs: without them its tokens would not be priced at all.
_FREE_UNITS = ("input", "output")


@dataclass(frozen=True, slots=True)
class Skipped:
    key: str
    reason: str


@dataclass(slots=True)
class _Family:
    """The catalogue entries that make one model: its own entry and its image sizes."""

    source: str
    mode: str
    keys: list[str] = field(default_factory=list)
    components: list[Component] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Imported:
    """One model as the catalogue prices it."""

    model: str
    mode: str
    components: tuple[Component, ...]
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Reading:
    models: tuple[Imported, ...]
    skipped: tuple[Skipped, ...]
    warnings: tuple[str, ...]


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return None
    return Decimal(value)


def _plain(value: Decimal) -> Decimal:
    """Without trailing zeros, and never in exponent form ("10", not "1E+1")."""
    value = value.normalize()
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _rounded(value: Decimal, decimals: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


class _Reader:
    """Reads one catalogue's entries into components, noting what it had to change."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.skipped: list[Skipped] = []
        self.unmapped: Counter[str] = Counter()

    def components(
        self, key: str, entry: Mapping[str, Any], mode: str, size: str, quality: str
    ) -> list[Component]:
        found: list[Component] = []
        for name, raw in entry.items():
            if "cost" not in name or raw is None:
                continue
            if name == _WEB_SEARCH_KEY and isinstance(raw, Mapping):
                medium = _number(raw.get("search_context_size_medium"))
                if medium is None:
                    self.warnings.append(f"{key}: `{name}` has no medium size; not imported")
                    continue
                found += self.component(key, name, "tool_call", medium * 1000, tool="web_search")
                continue
            value = _number(raw)
            if value is None:
                if isinstance(raw, Mapping | list):
                    self.unmapped[name] += 1
                else:
                    self.warnings.append(f"{key}: `{name}` is not a number ({raw!r}); ignored")
                continue
            token = _TOKEN_KEY.match(name)
            rule = _OTHER_KEYS.get(name)
            if token is not None:
                thousands = token.group("thousands")
                found += self.component(
                    key,
                    name,
                    _TOKEN_KEYS[token.group("base")],
                    value * 10**6,
                    above=int(thousands) * 1000 if thousands else 0,
                    service_tier=token.group("tier") or "",
                )
            elif rule is not None and (not rule.modes or mode in rule.modes):
                image = rule.unit == "image"
                found += self.component(
                    key,
                    name,
                    rule.unit,
                    value * rule.factor,
                    tool=rule.tool,
                    size=size if image else "",
                    quality=quality if image else "",
                )
            elif name == _PIXEL_KEY and size:
                width, height = (int(n) for n in size.split("x"))
                exact = value * width * height
                rate = _rounded(exact, _IMAGE_DECIMALS)
                if rate != exact:
                    self.warnings.append(
                        f"{key}: {name} {_text(value)} x {width} x {height} = "
                        f"{_text(exact)} USD per image, rounded to {decimal_text(rate)}"
                    )
                found += self.component(key, name, "image", rate, size=size, quality=quality)
            elif value:
                self.unmapped[name] += 1
        return found

    def component(
        self, key: str, name: str, unit: str, exact: Decimal, **conditions: Any
    ) -> list[Component]:
        if exact < 0:
            self.warnings.append(f"{key}: `{name}` is negative; ignored")
            return []
        if exact >= _RATE_MAX:
            self.warnings.append(f"{key}: `{name}` is too large to be a price; ignored")
            return []
        spec = UNITS[unit]
        rate = _rounded(exact, spec.decimals)
        if rate != exact:
            self.warnings.append(
                f"{key}: {unit} {_text(exact)} per {spec.per} (`{name}`) has more than "
                f"{spec.decimals} decimals; rounded to {decimal_text(rate)}"
            )
        if not rate and unit not in _FREE_UNITS:
            if unit in FALLBACK:
                self.warnings.append(
                    f"{key}: {unit} is 0 in the catalogue; a zero rate is imported for input "
                    f"and output only, so it is billed at the {FALLBACK[unit]} rate"
                )
            return []
        return [Component.of(unit, _plain(rate), **conditions)]


def catalogue_prices(
    *,
    catalogue: Mapping[str, Any],
    models: Sequence[str] = (),
    provider: str = "",
    strip_prefix: bool = False,
) -> Reading:
    """The models a catalogue prices, as components, and the entries it cannot.

    ``models``: glob patterns; an entry is read when one matches its catalogue key or
    the model name it is imported as. ``provider``: only entries whose
    ``litellm_provider`` is this. ``strip_prefix``: import "anthropic/claude-x" as
    "claude-x" (the first path segment goes)."""
    reader = _Reader()
    families: dict[str, _Family] = {}
    for key, entry in catalogue.items():
        if key == "sample_spec":
            continue
        if not isinstance(entry, Mapping):
            # It has no provider to match; it is reported if the filters could match it.
            if not provider and (not models or any(fnmatchcase(key, p) for p in models)):
                reader.skipped.append(Skipped(key, "not an object"))
            continue
        if provider and entry.get("litellm_provider") != provider:
            continue
        # LiteLLM's oldest chat entries carry no mode.
        raw_mode = entry.get("mode", ModelPrice.Mode.CHAT.value)
        mode = _MODE_ALIASES.get(raw_mode, raw_mode) if isinstance(raw_mode, str) else ""
        source, size, quality = key, "", ""
        sized = _SIZED_KEY.match(key) if mode == ModelPrice.Mode.IMAGE_GENERATION else None
        if sized is not None:
            source = sized.group("prefix") + sized.group("model")
            size = f"{sized.group('width')}x{sized.group('height')}"
            quality = sized.group("quality") or ""
        name = _stripped(source) if strip_prefix else source
        if models and not any(fnmatchcase(key, p) or fnmatchcase(name, p) for p in models):
            continue
        if mode not in _MODES:
            reader.skipped.append(Skipped(key, f"mode `{raw_mode}` is not one Tollgate prices"))
            continue
        family = families.setdefault(source, _Family(source=source, mode=mode))
        if family.mode != mode:
            reader.skipped.append(
                Skipped(key, f"mode `{mode}` differs from `{family.keys[0]}` ({family.mode})")
            )
            continue
        family.keys.append(key)
        family.components += reader.components(key, entry, mode, size, quality)

    imported: dict[str, Imported] = {}
    for family in _winners(families, strip_prefix, reader.skipped):
        name = _stripped(family.source) if strip_prefix else family.source
        if not family.components:
            reader.skipped.append(Skipped(family.keys[0], "no cost this importer can price"))
            continue
        if len(name) > _NAME_MAX:
            reader.skipped.append(Skipped(family.keys[0], f"longer than {_NAME_MAX} characters"))
            continue
        try:
            checked = components_checked(family.components)
        except PriceError as exc:
            reader.skipped.append(Skipped(family.keys[0], str(exc)))
            continue
        imported[name] = Imported(name, family.mode, tuple(checked), tuple(family.keys))
    if reader.unmapped:
        counted = ", ".join(
            f"{k} ({_count(n, 'model', 'models')})" for k, n in sorted(reader.unmapped.items())
        )
        reader.warnings.append(f"keys no Tollgate unit stands for, not imported: {counted}")
    return Reading(
        models=tuple(imported[name] for name in sorted(imported)),
        skipped=tuple(reader.skipped),
        warnings=tuple(reader.warnings),
    )


def _stripped(source: str) -> str:
    return source.split("/", 1)[1] if "/" in source else source


def _winners(
    families: Mapping[str, _Family], strip_prefix: bool, skipped: list[Skipped]
) -> list[_Family]:
    """One family per imported name: once prefixes are stripped, the entry that
    already had the name wins ("claude-x" over "anthropic/claude-x"), else the first."""
    if not strip_prefix:
        return list(families.values())
    by_name: dict[str, list[_Family]] = {}
    for family in families.values():
        by_name.setdefault(_stripped(family.source), []).append(family)
    winners = []
    for name, candidates in by_name.items():
        winner = next((f for f in candidates if f.source == name), candidates[0])
        winners.append(winner)
        for loser in candidates:
            if loser is not winner:
                skipped.extend(
                    Skipped(k, f"`{name}` is imported from `{winner.keys[0]}`") for k in loser.keys
                )
    return winners


# -- the diff against the group's prices ----------------------------------------------


def _label(c: Component) -> str:
    parts = [c.unit, c.size, c.quality, c.tool, c.service_tier]
    if c.above:
        above = f"{c.above // 1000}k" if c.above % 1000 == 0 else str(c.above)
        parts.append(f"above {above}")
    return " ".join(p for p in parts if p)


_UNIT_ORDER = {name: i for i, name in enumerate(UNITS)}


def _place(c: Component) -> tuple[int, tuple[str, int, str, str, str, str]]:
    """Where a component goes in a list: in the order of ``UNITS``, then by conditions."""
    return _UNIT_ORDER[c.unit], c.key


@dataclass(frozen=True, slots=True)
class Change:
    """One component that differs: added (no ``old``), removed (no ``new``) or
    repriced."""

    component: Component
    old: Decimal | None
    new: Decimal | None

    def text(self) -> str:
        label = _label(self.component)
        if self.old is None and self.new is not None:
            return f"{label} added at {decimal_text(self.new)}"
        if self.new is None and self.old is not None:
            return f"{label} removed (was {decimal_text(self.old)})"
        assert self.old is not None and self.new is not None
        return f"{label} {decimal_text(self.old)} -> {decimal_text(self.new)}"


@dataclass(frozen=True, slots=True)
class ModelDiff:
    model: str
    mode: str
    components: tuple[Component, ...]
    # "new", "changed" or "unchanged"
    status: str
    changes: tuple[Change, ...] = ()
    # The mode of the version in effect, when the catalogue's differs.
    old_mode: str = ""

    def text(self) -> str:
        """The model's line of the diff ("+ gpt-4o: input 2.50, ... per 1M tokens")."""
        if self.status == "changed":
            parts = [c.text() for c in self.changes]
            if self.old_mode:
                parts.insert(0, f"mode {self.old_mode} -> {self.mode}")
            return f"~ {self.model}: {'; '.join(parts)}"
        by_per: dict[str, list[str]] = {}
        for c in sorted(self.components, key=_place):
            by_per.setdefault(UNITS[c.unit].per, []).append(f"{_label(c)} {decimal_text(c.rate)}")
        rates = "; ".join(f"{', '.join(rs)} per {per}" for per, rs in by_per.items())
        mode = "" if self.mode == ModelPrice.Mode.CHAT else f" ({self.mode})"
        sign = "+" if self.status == "new" else "="
        return f"{sign} {self.model}{mode}: {rates}"


def _diff(imported: Imported, current: Price | None) -> ModelDiff:
    if current is None:
        return ModelDiff(imported.model, imported.mode, imported.components, "new")
    old = {c.key: c for c in current.components}
    new = {c.key: c for c in imported.components}
    changes = sorted(
        (
            Change(
                new.get(k) or old[k],
                old[k].rate if k in old else None,
                new[k].rate if k in new else None,
            )
            for k in old.keys() | new.keys()
            if k not in old or k not in new or old[k].rate != new[k].rate
        ),
        key=lambda c: _place(c.component),
    )
    old_mode = current.mode if current.mode != imported.mode else ""
    status = "changed" if changes or old_mode else "unchanged"
    return ModelDiff(
        imported.model, imported.mode, imported.components, status, tuple(changes), old_mode
    )


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


@dataclass(frozen=True, slots=True)
class CatalogueResult:
    """What an import found and did; the command and the admin page show it."""

    group: str
    models: tuple[ModelDiff, ...]
    skipped: tuple[Skipped, ...]
    warnings: tuple[str, ...]
    dry_run: bool
    # Price versions written (0 on a dry run).
    published: int
    effective_from: datetime | None

    @property
    def new(self) -> list[ModelDiff]:
        return [m for m in self.models if m.status == "new"]

    @property
    def changed(self) -> list[ModelDiff]:
        return [m for m in self.models if m.status == "changed"]

    @property
    def unchanged(self) -> list[ModelDiff]:
        return [m for m in self.models if m.status == "unchanged"]

    def lines(self, *, unchanged: bool = False) -> list[str]:
        """The diff in readable lines; each unchanged model too with ``unchanged``."""
        out = [m.text() for m in (*self.new, *self.changed)]
        if unchanged:
            out += [m.text() for m in self.unchanged]
        elif self.unchanged:
            out.append(f"= {len(self.unchanged)} unchanged")
        out += [f"! skipped {s.key}: {s.reason}" for s in self.skipped]
        out += [f"! {w}" for w in self.warnings]
        return out

    def summary(self) -> str:
        counts = (
            f"{len(self.new)} new, {len(self.changed)} changed, "
            f"{len(self.unchanged)} unchanged, {len(self.skipped)} skipped"
        )
        if self.dry_run:
            return f"Dry run for {self.group}: {counts}; nothing was written."
        when = f" from {self.effective_from:%Y-%m-%d %H:%M %Z}" if self.effective_from else ""
        versions = _count(self.published, "price version", "price versions")
        return f"Published {versions} in {self.group}{when} ({counts})."


def catalogue_import(
    *,
    group: PriceGroup,
    catalogue: Mapping[str, Any],
    models: Sequence[str] = (),
    provider: str = "",
    strip_prefix: bool = False,
    dry_run: bool = True,
    effective_from: datetime | None = None,
) -> CatalogueResult:
    """Compare a catalogue with the group's prices in effect (at ``effective_from``,
    now by default) and, unless ``dry_run``, publish one version per new or changed
    model, all in one transaction, from ``effective_from`` (now by default).
    Raises CatalogueError."""
    if effective_from is not None and effective_from < timezone.now():
        raise CatalogueError("a price applies to later requests only: the start is past")
    reading = catalogue_prices(
        catalogue=catalogue, models=models, provider=provider, strip_prefix=strip_prefix
    )

    def diffs(at: datetime) -> tuple[ModelDiff, ...]:
        book = price_book(group_id=group.pk)
        return tuple(_diff(m, price_in_book(book, m.model, at)) for m in reading.models)

    if dry_run:
        found = diffs(effective_from or timezone.now())
        published = 0
    else:
        try:
            with transaction.atomic(durable=True):
                # Two imports into one group at once would each publish against the
                # prices the other is replacing.
                PriceGroup.objects.select_for_update().only("pk").get(pk=group.pk)
                at = effective_from or timezone.now()
                found = diffs(at)
                for diff in found:
                    if diff.status != "unchanged":
                        model_price_set(
                            group_id=group.pk,
                            model=diff.model,
                            components=diff.components,
                            mode=diff.mode,
                            effective_from=at,
                        )
        except IntegrityError:
            raise CatalogueError(
                "a version of one of these models already starts at that moment; "
                "choose another start"
            ) from None
        published = sum(1 for d in found if d.status != "unchanged")
    return CatalogueResult(
        group=group.name,
        models=found,
        skipped=reading.skipped,
        warnings=reading.warnings,
        dry_run=dry_run,
        published=published,
        effective_from=effective_from,
    )


# -- the admin page ------------------------------------------------------------------


class CatalogueForm(forms.Form):
    catalogue = forms.FileField(
        label="Catalogue (JSON)",
        help_text=(
            "LiteLLM's model_prices_and_context_window.json, at most 20 MB. Choose it "
            "again to import after a preview."
        ),
    )
    models = forms.CharField(
        required=False,
        label="Models",
        help_text="Glob patterns, separated by spaces or commas (gpt-4o* claude-*); "
        "empty: every model.",
    )
    provider = forms.CharField(
        required=False,
        max_length=100,
        help_text="Only entries whose litellm_provider is this (openai, anthropic...).",
    )
    strip_prefix = forms.BooleanField(
        required=False,
        label="Strip the prefix",
        help_text='Import "anthropic/claude-x" as "claude-x".',
    )
    effective_from = forms.DateTimeField(
        required=False,
        help_text="When the new versions start to apply, e.g. 2027-01-31 00:00 (empty: now).",
    )

    def clean_catalogue(self) -> dict[str, Any]:
        upload = self.cleaned_data["catalogue"]
        if upload.size > MAX_BYTES:
            raise forms.ValidationError(f"The file is larger than {MAX_BYTES // 2**20} MB.")
        try:
            return catalogue_parse(text=upload.read())
        except CatalogueError as exc:
            raise forms.ValidationError(f"This file is {exc}.") from None

    def clean_models(self) -> list[str]:
        return self.cleaned_data["models"].replace(",", " ").split()

    def clean_effective_from(self) -> datetime | None:
        value = self.cleaned_data.get("effective_from")
        if value is not None and value < timezone.now():
            raise forms.ValidationError("A price applies to later requests only.")
        return value


def catalogue_admin_view(
    model_admin: admin.ModelAdmin, request: HttpRequest, group: PriceGroup
) -> HttpResponse:
    """Preview (a dry run) or import a catalogue into ``group``."""
    form = CatalogueForm(request.POST or None, request.FILES or None)
    result = None
    if request.method == "POST" and form.is_valid():
        apply = "_import" in request.POST
        data = form.cleaned_data
        try:
            result = catalogue_import(
                group=group,
                catalogue=data["catalogue"],
                models=data["models"],
                provider=data["provider"],
                strip_prefix=data["strip_prefix"],
                dry_run=not apply,
                effective_from=data["effective_from"],
            )
        except CatalogueError as exc:
            form.add_error(None, str(exc))
        else:
            if apply:
                model_admin.message_user(request, result.summary(), messages.SUCCESS)
                if result.skipped or result.warnings:
                    model_admin.message_user(
                        request,
                        f"{_count(len(result.skipped), 'entry', 'entries')} skipped, "
                        f"{_count(len(result.warnings), 'warning', 'warnings')}: preview the "
                        "file to read them.",
                        messages.WARNING,
                    )
                return HttpResponseRedirect(
                    reverse("admin:billing_pricegroup_change", args=[group.pk])
                )
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"Import a price catalogue into {group.name}",
        "group": group,
        "form": form,
        "result": result,
        "opts": model_admin.model._meta,
    }
    return TemplateResponse(request, "admin/billing/pricegroup/import.html", context)
