"""Channel selection: highest priority tier first, weighted random order inside a tier."""

import random

from .selectors import ChannelInfo

MAX_ATTEMPTS = 3


def route_order(channels: list[ChannelInfo], rng: random.Random | None = None) -> list[ChannelInfo]:
    """Every candidate, in the order they should be tried."""
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
