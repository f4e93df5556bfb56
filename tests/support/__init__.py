"""What the tests share, imported from here rather than from each other:

- ``factories``: factory-boy factories for users, price groups, prices, accounts (with
  their ledger account and an optional opening credit), API keys (with their one-time
  secret) and channels.
- ``servers``: ``ServerThread``, an ASGI app under uvicorn on a loopback port.
- ``upstreams``: ``FakeUpstream`` and ``FakeAnthropic``, scripted loopback providers.
- ``waiting``: ``wait_for``, polling until another thread or process has done its part.
- ``ledger``: requests finished and settled through the real money paths
  (``finished_request``, ``served``), ``backdate`` and ``balance_check_off``.
- ``load``: steady client traffic against a gateway while a test breaks something.
- ``procs``: real processes (a private Redis and PostgreSQL cluster, the gateway, a
  Celery worker) that a fault test may kill or restart.
- ``stalling``: upstreams that misbehave at the socket level.
"""
