"""Celery side of bbsync: the app, its queues and schedule, and thin tasks over `app.sync`."""
