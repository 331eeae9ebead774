"""How long a sync has left when the budget, not the machine, is what bounds it.

Pure arithmetic over a progress report and the budget snapshots, for `bbsync sync`: the calls
still to make per Bitbucket resource (estimated from what the run spent so far), against what
each window gives backfill now and per window after that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from app.bitbucket.budget import BudgetSnapshot

LISTING_PAGE = 100  # repositories a listing page holds (`pagelen=100`)


@dataclass(frozen=True)
class RemainingCalls:
    api: int
    raw: int


def listing_remaining(seen: int, total: int | None) -> RemainingCalls:
    """Pages of the repository listing still to read (all on the API window)."""
    if total is None or total <= seen:
        return RemainingCalls(0, 0)
    return RemainingCalls(math.ceil((total - seen) / LISTING_PAGE), 0)


def catalog_remaining(checked: int, total: int, files_fetched: int, calls: int) -> RemainingCalls:
    """Calls the catalog phase still needs, at the rate per repository it has spent so far:
    file reads on the raw window, the rest (search, probes) on the API window. Before the
    first repository, one file read per repository."""
    left = max(0, total - checked)
    if checked <= 0:
        return RemainingCalls(0, left)
    raw = math.ceil(files_fetched / checked * left)
    api = math.ceil(max(0, calls - files_fetched) / checked * left)
    return RemainingCalls(api, raw)


def budget_eta_hours(
    remaining: RemainingCalls, api: BudgetSnapshot, raw: BudgetSnapshot
) -> float | None:
    """Hours until the remaining calls fit in the budget, or None when what each window gives
    backfill now already covers them (then the machine, not the budget, is the bound).

    Per resource: the calls beyond what is left now, at the backfill share of a full window
    per window; the resources' times add up (the phases read them one after the other), as
    in the physical bound `(pages + search) / API share + files / raw share`.
    """
    hours, bound = 0.0, False
    for need, snap in ((remaining.api, api), (remaining.raw, raw)):
        beyond = need - snap.backfill_remaining
        if beyond <= 0:
            continue
        bound = True
        per_window = snap.limit - snap.reserve
        if per_window <= 0:
            return math.inf
        hours += beyond / per_window * snap.window_seconds / 3600
    return hours if bound else None


def describe_eta(hours: float | None) -> str:
    """The label text: empty when the machine is the bound."""
    if hours is None:
        return ""
    if math.isinf(hours):
        return "budget-bound: no backfill share left (reserve is the whole limit)"
    return f"budget-bound: about {hours:.1f} h left at the current limits"
