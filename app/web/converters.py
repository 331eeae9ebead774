"""URL converters shared by the blueprints."""

from __future__ import annotations

from werkzeug.routing import BaseConverter

# A Cloud workspace slug, or a Data Center project's workspace `{host}/{KEY}`: the host
# (`bitbucket.example.com`, `host:7990`) then a project key, upper case as bbsync keys it
# (personal projects `~USER`). Repository slugs are lower case, so `/{ws}/{slug}/…` never
# reads a Cloud repository slug as a project key.
WORKSPACE_PATTERN = r"[^/]+(?:/~?[A-Z_][A-Z0-9_]*)?"


class WorkspaceConverter(BaseConverter):
    """`<workspace:workspace>`: a Cloud workspace, or a Data Center `{host}/{KEY}` written
    with its slash (`/api/repositories/bitbucket.example.com/PROJ/repo/pullrequests`) or
    with it escaped as `%2F`."""

    regex = WORKSPACE_PATTERN
    part_isolating = False
