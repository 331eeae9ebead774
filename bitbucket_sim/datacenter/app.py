"""The Flask application of the Data Center flavour."""

from __future__ import annotations

from flask import Flask

from bitbucket_sim.api import admin, admin_repos
from bitbucket_sim.datacenter import (
    admin as dc_admin,
)
from bitbucket_sim.datacenter import (
    api_activity,
    api_hooks,
    api_people,
    api_repos,
    guards,
)

REST_VERSIONS = ("latest", "1.0")


def register(app: Flask) -> None:
    """Every Data Center route, under `/rest/api/latest/` and `/rest/api/1.0/`."""
    guards.install(app)
    for version in REST_VERSIONS:
        suffix = version.replace(".", "_")
        for module in (api_repos, api_activity, api_people, api_hooks):
            app.register_blueprint(
                module.blueprint,
                url_prefix=f"/rest/api/{version}",
                name=f"{module.blueprint.name}_{suffix}",
            )
        app.register_blueprint(
            api_activity.build_status,
            url_prefix=f"/rest/build-status/{version}",
            name=f"dc_build_status_{suffix}",
        )
    # Data Center-only admin routes first; the shared admin API after them.
    for module in (dc_admin, admin, admin_repos):
        app.register_blueprint(module.blueprint)
