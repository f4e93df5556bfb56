"""The README's run path on a fresh machine: no Postgres, no Redis, no network."""

import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_embedded_default_serves_and_bills_with_the_printed_key(tmp_path):
    db_file = tmp_path / "embedded.sqlite3"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{db_file}",
        "TOLLGATE_STATE_DIR": str(tmp_path / "state"),
    }
    port = _free_port()
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=env, check=True, cwd=ROOT)
    out = subprocess.run(
        [*manage, "tollgate_demo", "--base-url", f"http://127.0.0.1:{port}"],
        env=env,
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    key = re.search(r"API key:\s+(sk-tg-\S+)", out).group(1)
    assert f"curl -s http://127.0.0.1:{port}/v1/chat/completions" in out
    assert f"Bearer {key}" in out

    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--port",
            str(port),
            "--lifespan",
            "off",
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.2)
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello!"}]},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        cost = response.json()["usage"]["cost"]
        assert cost != "0.000000"
    finally:
        server.terminate()
        server.wait(10)

    db = sqlite3.connect(db_file)
    settled, status = db.execute("SELECT settled_at, status FROM usage_usagerecord").fetchone()
    assert settled is not None and status == "success"
    balance, held = db.execute(
        "SELECT balance, held FROM accounts_account WHERE name='Demo'"
    ).fetchone()
    assert held == 0
    assert balance == 10_000_000 - int(Decimal(cost) * 1_000_000)

    # Running it again keeps the data and prints the same, still valid key.
    again = subprocess.run(
        [*manage, "tollgate_demo"], env=env, check=True, cwd=ROOT, capture_output=True, text=True
    ).stdout
    assert key in again
