"""Domain services: what to fetch from Bitbucket, what changed, what to store."""
