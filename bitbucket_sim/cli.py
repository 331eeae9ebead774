"""`python -m bitbucket_sim`: the command line of the simulator."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from bitbucket_sim.config import FIELDS_EXCLUSION_CHOICES, PAGELEN_OVER_CAP_CHOICES, SimConfig
from bitbucket_sim.server import SimServer


def build_parser() -> argparse.ArgumentParser:
    """Every flag; names map one-to-one onto `SimConfig` fields."""
    defaults = SimConfig()
    parser = argparse.ArgumentParser(
        prog="python -m bitbucket_sim",
        description="A Bitbucket Cloud API 2.0 simulator with rate limits and webhooks.",
    )
    add = parser.add_argument
    add("--port", type=int, default=7990, help="0 picks a free port (default 7990)")
    add("--host", default=defaults.host)
    add("--workspace", default=defaults.workspace)
    add("--repos", type=int, default=defaults.repos, help="number of generated repositories")
    add("--seed", type=int, default=defaults.seed)
    add("--rate-limit", default=defaults.rate_limit, help="N/h, N/m or N/s (default 1000/h)")
    add("--raw-rate-limit", default=defaults.raw_rate_limit, help="file contents (5000/h)")
    retry = parser.add_mutually_exclusive_group()
    retry.add_argument(
        "--retry-after",
        type=int,
        metavar="SECONDS",
        default=None,
        help="send Retry-After on 429s (Bitbucket observed sends none)",
    )
    retry.add_argument("--no-retry-after", dest="retry_after", action="store_const", const=None)
    add("--webhook-url", default=None, help="receives every event")
    add("--webhook-secret", default=None, help="signs deliveries (X-Hub-Signature)")
    add("--access-token", default=None, help="accepted as Authorization: Bearer")
    add("--email", default=None, help="with --api-token: accepted as Basic email:token")
    add("--api-token", default=None)
    add("--oauth-client-id", default=None)
    add("--oauth-client-secret", default=None)
    add("--oauth-expires-in", type=int, default=defaults.oauth_expires_in, metavar="SECONDS")
    boolean = argparse.BooleanOptionalAction
    add("--push-updates-updated-on", action=boolean, default=defaults.push_updates_updated_on)
    add("--not-modified-costs-call", action=boolean, default=defaults.not_modified_costs_call)
    add("--code-search", action=boolean, default=defaults.code_search)
    add("--groups-api", action=boolean, default=defaults.groups_api)
    add("--search-repeats-items", action=boolean, default=defaults.search_repeats_items)
    add("--pagelen-over-cap", choices=PAGELEN_OVER_CAP_CHOICES, default=defaults.pagelen_over_cap)
    add(
        "--added-fields-survive",
        choices=FIELDS_EXCLUSION_CHOICES,
        default=defaults.added_fields_survive,
        help="which fields=-… exclusions spare a +… field below them (default: wildcard)",
    )
    add("--webhook-timeout", type=float, default=defaults.webhook_timeout, metavar="SECONDS")
    add(
        "--webhook-retry-delay",
        type=float,
        default=defaults.webhook_retry_delay,
        metavar="SECONDS",
        help="pause between delivery attempts (default 0.5)",
    )
    add("--log-requests", action=boolean, default=defaults.log_requests)
    return parser


def config_from_args(argv: Sequence[str] | None = None) -> SimConfig:
    """Parse flags into a validated `SimConfig` (exits with a usage error when invalid)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return SimConfig(**vars(args))
    except ValueError as exc:
        parser.error(str(exc))
        raise  # parser.error exits; this keeps type checkers informed


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run until interrupted; prints one ready line to stdout."""
    config = config_from_args(argv)
    server = SimServer(config)
    try:
        server.start()
    except OSError as exc:
        print(
            f"bitbucket_sim: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr
        )
        return 1
    print(
        f"bitbucket_sim listening on {server.url} "
        f"(workspace {config.workspace}, {config.repos} repositories)",
        flush=True,
    )
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
