"""What the tests share, imported from here rather than from each other or a conftest:

- ``fixtures``: the fixtures several folders use (Tollgate on a loopback port, the fake
  upstreams, a real Celery worker, ``relay_env``, ``world``, ``fast_passwords``); a
  pytest plugin registered once by tests/conftest.py, not imported by test modules.
- ``factories``: factory-boy factories for users, price groups, prices, accounts (with
  their ledger account and an optional opening credit), API keys (with their one-time
  secret) and channels.
- ``servers``: ``ServerThread``, an ASGI app under uvicorn on a loopback port.
- ``upstreams``: ``FakeUpstream`` and ``FakeAnthropic``, scripted loopback providers.
- ``media``: ``FakeMedia`` (OpenAI's images, audio and moderations, Jina's rerank) and
  ``FakeCohere`` (Cohere's v2 rerank), ``MediaEnv`` (what ``media_env`` gives a test),
  the files the tests upload (``wav``, ``mp3``, ``png``) and ``settled``/``money``.
- ``waiting``: ``wait_for``, polling until another thread or process has done its part.
- ``relay``: ``RelayEnv`` (what ``relay_env`` gives a test), ``chat()`` request bodies,
  ``settle_in_flight()``, ``error_of()`` for an OpenAI-shaped error, and ``WEATHER``, a
  Messages API tool.
- ``api``: ``World`` (what ``world`` gives a test), ``client_for()`` a user, and
  ``usage()`` records for the management API's logs and exports.
- ``ledger``: requests finished and settled through the real money paths
  (``finished_request``, ``served``), ``backdate`` and ``balance_check_off``.
- ``load``: steady client traffic against a gateway while a test breaks something.
- ``procs``: real processes (a private Redis and PostgreSQL cluster, the gateway, a
  Celery worker) that a fault test may kill or restart, and ``test_database_url``.
- ``stalling``: upstreams that misbehave at the socket level.
- ``statements``: ``statements()``, the database statements a block of code makes
  (through Django on any thread, or ``core.adb`` on the event loop).

Asserts in these modules are rewritten by pytest (tests/conftest.py registers the
package), so a helper's failed assert is explained like a test's own.
"""
