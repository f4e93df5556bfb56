"""What every app stands on: the money kernel, database and Redis plumbing, the
per-process caches and their invalidation, logging, the JSON error surfaces, access
rules of the management API, health probes and deployment checks. It imports no
app of the project."""
