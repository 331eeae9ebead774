"""The running simulator: workspace state plus the services every request uses."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from bitbucket_sim.config import RUNTIME_FLAGS, RateSpec, SimConfig
from bitbucket_sim.credentials import Gatekeeper
from bitbucket_sim.delivery import WebhookDispatcher, encode_payload
from bitbucket_sim.errors import bad_request, not_found
from bitbucket_sim.events import CloudEvents, EventSink
from bitbucket_sim.faults import FaultPlan
from bitbucket_sim.generate import build_workspace
from bitbucket_sim.ids import BASE_TIME, EventClock, IdSource
from bitbucket_sim.model import Account, Hook, Repository
from bitbucket_sim.ratelimit import RAW, REPOSITORIES, SlidingWindowLimiter
from bitbucket_sim.stats import CallStats

if TYPE_CHECKING:
    from bitbucket_sim.datacenter.state import DcState

# Live changes draw ids from their own stream so they never disturb the generated workspace.
_LIVE_SEED_OFFSET = 1_000_003


class Simulator:
    """Everything behind the HTTP surface.

    `lock` guards the workspace; the app holds it for the whole of each request, so handlers
    and admin changes see and leave a consistent state.
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.workspace = build_workspace(config.workspace, config.repos, config.seed)
        self.ids = IdSource(config.seed + _LIVE_SEED_OFFSET)
        self.clock = EventClock()
        self.faults = FaultPlan()
        self.limiter = SlidingWindowLimiter(
            {REPOSITORIES: config.rate_spec, RAW: config.raw_rate_spec}
        )
        self.gate = Gatekeeper(config)
        self.dispatcher = WebhookDispatcher(
            config.webhook_timeout, config.webhook_retry_delay, datacenter=config.is_datacenter
        )
        self.public_url = f"http://{config.host}:{config.port}"
        self.dc: DcState | None = None
        self.events: EventSink
        if config.is_datacenter:
            from bitbucket_sim.datacenter.state import DcState

            self.dc = DcState(self)
            self.stats = CallStats(self.dc.families)
            self.events = self.dc.events
        else:
            self.stats = CallStats()
            self.events = CloudEvents(self)
        # Rendered repository objects, reused while nothing they show has changed.
        self.render_cache: dict[tuple[str, str], tuple[tuple[Any, ...], dict[str, Any]]] = {}
        if config.webhook_url:
            self.workspace.hooks.append(
                Hook(
                    uuid=self.ids.uuid(),
                    url=config.webhook_url,
                    description="configured with --webhook-url",
                    active=True,
                    events=[],
                    secret=config.webhook_secret,
                    created_at=BASE_TIME,
                    all_events=True,
                    name="webhook-url",
                )
            )

    def repository(self, key: str) -> Repository:
        """A repository by slug or `{uuid}`, or a 404."""
        repo = self.workspace.find_repository(key)
        if repo is None:
            raise not_found(f"Repository {self.workspace.slug}/{key} not found")
        return repo

    def check_workspace(self, key: str) -> None:
        """404 unless `key` names the simulated workspace."""
        if not self.workspace.matches(key):
            raise not_found(f"No workspace with identifier '{key}'.")

    def actor(self, key: str | None) -> Account:
        """The account acting in an admin change: the one named, else the first member."""
        if key:
            account = self.workspace.find_account(key)
            if account is None:
                raise bad_request(f"Unknown account {key!r}")
            return account
        if self.workspace.member_ids:
            return self.workspace.accounts[self.workspace.member_ids[0]]
        return next(iter(self.workspace.accounts.values()))

    def emit(
        self,
        event_key: str,
        payload: dict[str, Any],
        repository_uuid: str | None,
        project_key: str | None = None,
    ) -> int:
        """Queue `payload` for every subscription that wants it; returns how many."""
        body = encode_payload(payload)
        queued = 0
        for hook in self.workspace.hooks:
            if hook.wants(event_key, repository_uuid, project_key):
                self.dispatcher.enqueue(event_key, hook.uuid, hook.url, hook.secret, body)
                queued += 1
        return queued

    def update_config(self, changes: dict[str, Any]) -> None:
        """Apply runtime flag changes from `POST /_sim/config`; 400 on unknown or bad values."""
        for name, value in changes.items():
            kind = RUNTIME_FLAGS.get(name)
            if kind is None:
                raise bad_request(f"Unknown or read-only option {name!r}")
            if value is None and name != "retry_after":
                raise bad_request(f"Option {name!r} cannot be null")
            if value is not None and kind is float and isinstance(value, int):
                value = float(value)
            if value is not None and not isinstance(value, kind):
                raise bad_request(f"Option {name!r} must be {kind.__name__}")
            if kind is int and isinstance(value, bool):
                raise bad_request(f"Option {name!r} must be int")
        try:
            candidate = SimConfig(**{**self.config.__dict__, **changes})  # validates
        except (TypeError, ValueError) as exc:
            raise bad_request(str(exc)) from exc
        for name in changes:
            setattr(self.config, name, getattr(candidate, name))
        self.limiter.set_spec(REPOSITORIES, self.config.rate_spec)
        self.limiter.set_spec(RAW, RateSpec.parse(self.config.raw_rate_limit))
        self.dispatcher.retry_delay = self.config.webhook_retry_delay
        if self.dc is not None:
            self.dc.buckets.configure(self.config.refill_per_second, self.config.burst)

    def reset_limits(self) -> None:
        """Forget every rate-limit window (and Data Center token bucket)."""
        self.limiter.reset()
        if self.dc is not None:
            self.dc.buckets.reset()

    def start(self) -> None:
        self.dispatcher.start()

    def stop(self) -> None:
        self.dispatcher.stop()
