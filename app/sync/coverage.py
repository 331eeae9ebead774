"""How far the scheduled sweeps are behind, per workspace: activity reconciliation (pull
requests, pipelines, statuses) and the repository-permissions walk of the people sync, each
within its share of the budget. Shown by `bbsync status`, `/api/budget` and the status page."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.models import Workspace, utcnow
from app.sync.activity import activity_coverage, sweep_share
from app.sync.people import people_coverage


@dataclass(frozen=True)
class Sweep:
    job: str  # activity | people
    what: str  # what the sweep reads, for people
    share: float
    repositories: int
    never: int  # repositories the sweep has not read yet
    oldest: datetime | None  # the oldest read among those it has
    sweep_hours: float  # a full pass over every repository at the current share

    @property
    def oldest_age_hours(self) -> float | None:
        if self.oldest is None:
            return None
        return round((utcnow() - self.oldest).total_seconds() / 3600, 1)

    def as_dict(self) -> dict[str, object]:
        return {
            "share": self.share,
            "repositories": self.repositories,
            "never": self.never,
            "oldest": self.oldest.isoformat() if self.oldest else None,
            "oldest_age_hours": self.oldest_age_hours,
            # None: no share left for it (what members and groups cost takes it all)
            "sweep_hours": None if math.isinf(self.sweep_hours) else round(self.sweep_hours, 2),
        }

    def line(self) -> str:
        """One line for `bbsync status`."""
        text = f"  {self.job}: "
        if self.oldest is None or self.never == self.repositories:
            text += "never " + ("reconciled" if self.job == "activity" else "read")
        else:
            verb = "reconciliation" if self.job == "activity" else "permissions read"
            text += f"oldest {verb} {self.oldest_age_hours:.1f} h ago"
            if self.never:
                text += f", {self.never} repositories not yet"
        return text + f"; a full sweep takes {self.sweep_hours:.1f} h at the current share"


def sweeps(session: Session, workspace: str, settings: Settings) -> list[Sweep]:
    activity = activity_coverage(session, workspace, settings)
    people = people_coverage(session, workspace, settings)
    return [
        Sweep(
            "activity",
            "pull requests, pipelines, statuses",
            sweep_share(settings),  # the quiet sweep's: changed repositories may spend more
            activity.repositories,
            activity.never_reconciled,
            activity.oldest,
            activity.sweep_hours,
        ),
        Sweep(
            "people",
            "repository permissions",
            settings.people_share,
            people.repositories,
            people.never_read,
            people.oldest,
            people.sweep_hours,
        ),
    ]


def workspace_sweeps(session: Session, settings: Settings) -> dict[str, list[Sweep]]:
    """Every known workspace's sweeps."""
    slugs = sorted(session.scalars(select(Workspace.slug)))
    return {slug: sweeps(session, slug, settings) for slug in slugs}
