"""The `bbsync` command line: the commands, `doctor` and the webhook/delivery groups."""
