"""The HTTP surface: Bitbucket API 2.0 routes, OAuth, and the `/_sim/` admin API."""
