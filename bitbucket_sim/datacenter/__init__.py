"""Bitbucket Data Center flavour of the simulator (`--flavor datacenter`).

The same generated model (`bitbucket_sim.model`) rendered in Data Center's REST shapes under
`/rest/api/latest/` (and `/rest/api/1.0/`), with its paging, errors, auth, token-bucket rate
limiting and webhooks. See bitbucket_sim/README.md, "Data Center".
"""
