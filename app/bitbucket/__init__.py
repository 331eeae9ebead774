"""Bitbucket Cloud: the HTTP client, its credentials, the shared rate budget, payload schemas."""
