"""The library shared by the worker and the scheduler: settings, schema, event store,
handlers, idempotency, slicing and the replay loop itself."""
