"""The store: the append-only log and its projections. No ORM object leaves this package."""
