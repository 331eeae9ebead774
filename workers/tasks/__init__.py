"""Thin tasks: each opens a unit of work and calls one service in `app.sync`.

`create_celery` autodiscovers this package (`related_name="tasks"`): importing it registers
every task below under its name in `app.task_names`.

- `sync`: full syncs, a listing alone, and the watchdog resuming lost runs.
- `deliveries`: webhook deliveries processed, requeued, and drained from the Redis spool.
- `refresh`: one repository's catalog read, coalesced per repository and retried.
- `activity`: activity reconciliation and retention.
- `members`: members, groups and permissions.
- `datacenter`: the Data Center source's projects, listing and catalog.
"""

from workers.tasks import activity, datacenter, deliveries, members, refresh, sync

__all__ = ["activity", "datacenter", "deliveries", "members", "refresh", "sync"]
