"""Step 4: the models and channels that may serve a request, in the order to try
them, with the price of each. A model name is served as itself; ``auto`` becomes
the models the key may use, best first by its account's strategy (cheapest,
fastest, or as listed). A channel serves a model if it lists it, its provider speaks
the request's dialect, and it is not cooling down after failures; a request pinned
to one channel (it continues state that channel keeps) is served by that one only.

Everything read here comes from per-process caches (the key's price book, the
enabled channels, their health), so with warm caches choosing does no I/O.
"""

import random
from dataclasses import dataclass

from accounts.models import AutoStrategy
from accounts.selectors import AuthKey
from billing.selectors import (
    PriceBook,
    price_book,
    price_book_cached,
    price_in_book,
    prices_in_book,
)
from core.threads import db

from .. import errors, health
from ..dialects import Dialect
from ..dialects.base import RequestParams
from ..providers import serving
from ..selectors import ChannelInfo, channels_cached, channels_enabled
from .request import RelayRequest, Route

AUTO = "auto"
# (model, channel) pairs tried per request, failovers included.
MAX_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class RouteState:
    """What choosing routes reads: the key's price book, the enabled channels, their
    health and (for ``auto`` by speed) the models' latencies."""

    prices: PriceBook
    channels: list[ChannelInfo]
    cooling: dict[int, tuple[float, int]]
    latencies: dict[str, float]


def _needs_latencies(key: AuthKey, params: RequestParams) -> bool:
    return params.model == AUTO and key.auto_strategy == AutoStrategy.FASTEST


def _state_load(key: AuthKey, params: RequestParams) -> RouteState:
    return RouteState(
        prices=price_book(group_id=key.price_group_id),
        channels=channels_enabled(),
        cooling=health.cooling(),
        latencies=health.latencies() if _needs_latencies(key, params) else {},
    )


def _state_cached(key: AuthKey, params: RequestParams) -> RouteState | None:
    prices = price_book_cached(group_id=key.price_group_id)
    channels = channels_cached()
    cooling = health.cooling_cached()
    latencies = health.latencies_cached() if _needs_latencies(key, params) else {}
    if prices is None or channels is None or cooling is None or latencies is None:
        return None
    return RouteState(prices=prices, channels=channels, cooling=cooling, latencies=latencies)


def _usable_channels(
    model: str, dialect: Dialect, state: RouteState, pin: int | None = None
) -> list[ChannelInfo]:
    types = serving(dialect.name)
    return [
        ch
        for ch in state.channels
        if model in ch.models
        and ch.type in types
        and health.available(state.cooling, ch.id)
        and (pin is None or ch.id == pin)
    ]


def _auto_routes(key: AuthKey, dialect: Dialect, state: RouteState, pin: int | None) -> list[Route]:
    """Candidate models for ``model: "auto"``, best first, by the account's strategy:
    the models the key may use whose mode is the dialect's."""
    prices = prices_in_book(state.prices)
    names = [
        m
        for m, price in prices.items()
        if price.mode == dialect.mode and (not key.allowed_models or m in key.allowed_models)
    ]
    if key.auto_models:
        names = [m for m in key.auto_models if m in names]
    routes = []
    for model in names:
        channels = _usable_channels(model, dialect, state, pin)
        if channels:
            routes.append(Route(model=model, price=prices[model], channels=channels))
    if key.auto_strategy == AutoStrategy.CHEAPEST:
        routes.sort(key=lambda r: (r.price.list_rate(), r.model))
    elif key.auto_strategy == AutoStrategy.FASTEST:
        # A model with no figure yet is tried first: that is how it gets one.
        latency = state.latencies
        routes.sort(key=lambda r: (latency.get(r.model, 0.0), r.model))
    return routes[:MAX_ATTEMPTS]


def _routes(request: RelayRequest, state: RouteState) -> list[Route]:
    key, model, dialect = request.key, request.params.model, request.dialect
    pin = request.channel_pin
    if model == AUTO:
        routes = _auto_routes(key, dialect, state, pin)
        if not routes:
            raise errors.upstream_error(
                503,
                "No model this key may use is being served right now.",
                request.request_id,
                "no_channel_available",
            )
        return routes
    price = price_in_book(state.prices, model)
    if price is None:
        raise errors.model_not_found(model)
    channels = _usable_channels(model, dialect, state, pin)
    if not channels:
        raise errors.upstream_error(
            503,
            f"No upstream channel is serving `{model}` right now."
            if pin is None
            else f"The channel keeping the state this request continues is not serving "
            f"`{model}` right now.",
            request.request_id,
            "no_channel_available",
        )
    return [Route(model=model, price=price, channels=channels)]


async def routes(request: RelayRequest) -> list[Route]:
    """The request's routes; raises ApiError when nothing can serve it."""
    key, params = request.key, request.params
    state = _state_cached(key, params) or await db(_state_load)(key, params)
    return _routes(request, state)


def route_order(channels: list[ChannelInfo], rng: random.Random | None = None) -> list[ChannelInfo]:
    """Every candidate channel, in the order they should be tried: highest priority
    tier first, weighted random order inside a tier."""
    choose = rng.choices if rng is not None else random.choices
    tiers: dict[int, list[ChannelInfo]] = {}
    for ch in channels:
        tiers.setdefault(ch.priority, []).append(ch)
    order: list[ChannelInfo] = []
    for priority in sorted(tiers, reverse=True):
        pool = list(tiers[priority])
        while pool:
            if len(pool) == 1:
                order.append(pool.pop())
                break
            pick = choose(range(len(pool)), weights=[c.weight for c in pool])[0]
            order.append(pool.pop(pick))
    return order


def candidates(request: RelayRequest) -> list[tuple[Route, ChannelInfo]]:
    """(model, channel) pairs in the order they should be tried, bounded."""
    pairs = [(route, ch) for route in request.routes for ch in route_order(route.channels)]
    return pairs[:MAX_ATTEMPTS]
