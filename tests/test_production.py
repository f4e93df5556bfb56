"""The production command, end to end: ``scripts/prod`` brings up the ASGI server with
two workers, a Celery worker and the beat under honcho, on PostgreSQL and Redis, with
DEBUG off. A call through the official client is served, settled by the worker
process and logged as one JSON line carrying its request id and none of its text."""

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from cryptography.fernet import Fernet
from openai import OpenAI

from accounts.keys import DISPLAY_PREFIX_LEN

ROOT = Path(__file__).resolve().parent.parent
DB = "tollgate_prod_test"
REDIS_DB = 11


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _admin_sql(statement: str) -> None:
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        c.execute(statement)


class Production:
    def __init__(self, tmp_path: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "honcho.log"
        self.db_url = f"postgres://postgres@127.0.0.1:5432/{DB}"
        self.env = {
            **os.environ,
            "DATABASE_URL": self.db_url,
            "REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "TOLLGATE_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "WEB_PORT": str(self.port),
            "WEB_WORKERS": "2",
            "WORKER_CONCURRENCY": "1",
            "TOLLGATE_STATE_DIR": str(tmp_path / "state"),
            "LOG_LEVEL": "INFO",
        }
        for name in ("DEBUG", "LOG_FORMAT", "SECURE_COOKIES", "CELERY_TASK_ALWAYS_EAGER"):
            self.env.pop(name, None)

    def sql(self, query: str, *params) -> list[tuple]:
        with psycopg.connect(self.db_url.replace("postgres://", "postgresql://")) as c:
            return c.execute(query, params).fetchall()

    def manage(self, *args: str) -> str:
        return subprocess.run(
            [str(ROOT / ".venv/bin/python"), "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def log_lines(self, process: str) -> list[str]:
        prefix = re.compile(rf"^\d\d:\d\d:\d\d {process}\.\d+\s+\| ")
        lines = self.log.read_text().splitlines()
        return [prefix.sub("", line) for line in lines if prefix.match(line)]


@pytest.fixture
def production(tmp_path):
    _admin_sql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    _admin_sql(f"CREATE DATABASE {DB}")
    redis.Redis(db=REDIS_DB).flushdb()
    prod = Production(tmp_path)
    with prod.log.open("w") as out:
        proc = subprocess.Popen(
            ["bash", "scripts/prod"],
            cwd=ROOT,
            env=prod.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, prod.log.read_text()[-3000:]
            try:
                if httpx.get(f"{prod.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, prod.log.read_text()[-3000:]
            time.sleep(0.3)
        yield prod
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _admin_sql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    # Every process of the group stopped on SIGTERM.
    assert "web.1 stopped" in prod.log.read_text()
    assert "worker.1 stopped" in prod.log.read_text()


def test_the_production_command_serves_settles_and_logs(production):
    readiness = httpx.get(f"{production.url}/readyz").json()
    assert readiness["status"] == "ready"
    assert readiness["checks"]["database"]["ok"] and readiness["checks"]["redis"]["ok"]
    assert httpx.get(f"{production.url}/healthz").json() == {"status": "ok"}

    demo = production.manage("tollgate_demo", "--base-url", production.url)
    key = re.search(r"sk-tg-[A-Za-z0-9]+", demo).group(0)
    (balance_before,) = production.sql(
        "SELECT a.balance FROM accounts_account a JOIN accounts_apikey k ON k.account_id = a.id "
        "WHERE k.prefix = %s",
        key[:DISPLAY_PREFIX_LEN],
    )[0]

    secret_words = "pelican-sonata-" + secrets.token_hex(4)
    client = OpenAI(base_url=f"{production.url}/v1", api_key=key, max_retries=0)
    reply = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": f"Please repeat {secret_words}"}],
        extra_headers={"x-request-id": "req_production_check_1"},
    )
    completion = reply.parse()
    assert reply.headers["x-request-id"] == "req_production_check_1"
    assert secret_words in completion.choices[0].message.content
    cost = Decimal(completion.usage.model_extra["cost"])
    assert cost > 0

    # The Celery worker process (not this test) settles it.
    deadline = time.monotonic() + 30
    while not production.sql(
        "SELECT 1 FROM usage_usagerecord WHERE request_id = %s AND settled_at IS NOT NULL",
        "req_production_check_1",
    ):
        assert time.monotonic() < deadline, production.log.read_text()[-3000:]
        time.sleep(0.2)
    (balance_after,) = production.sql(
        "SELECT a.balance FROM accounts_account a JOIN accounts_apikey k ON k.account_id = a.id "
        "WHERE k.prefix = %s",
        key[:DISPLAY_PREFIX_LEN],
    )[0]
    # The first charge of the account: the exact cost in whole micro-USD, the rest carried.
    assert balance_before - balance_after == int(cost * 1_000_000)

    # DEBUG is off: an unknown page is a plain 404, not Django's technical page.
    missing = httpx.get(f"{production.url}/no-such-page/")
    assert missing.status_code == 404
    assert "URLconf" not in missing.text

    # Console pages: secure cookies and headers; static files served, hashed and cached.
    login = httpx.get(f"{production.url}/login/")
    assert "; Secure" in login.headers["set-cookie"]
    assert login.headers["x-frame-options"] == "DENY"
    assert login.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in login.headers["content-security-policy"]
    css = re.search(r'href="(/static/[^"]+\.css)"', login.text).group(1)
    assert re.search(r"\.[0-9a-f]{12}\.css$", css), css
    static = httpx.get(f"{production.url}{css}")
    assert static.status_code == 200
    assert "max-age=315360000" in static.headers["cache-control"]

    # One JSON access line for the call, with its request id, and no prompt, completion
    # or key anywhere in any process's output.
    deadline = time.monotonic() + 5
    while True:
        access = [
            json.loads(line)
            for line in production.log_lines("web")
            if line.startswith("{") and '"tollgate.access"' in line
        ]
        if access or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    (line,) = [a for a in access if a.get("request_id") == "req_production_check_1"]
    assert line["level"] == "INFO"
    assert Decimal(line["cost_usd"]) == cost
    assert line["input_tokens"] == completion.usage.prompt_tokens
    assert line["output_tokens"] == completion.usage.completion_tokens
    everything = production.log.read_text()
    assert secret_words not in everything
    assert key not in everything and key[6:] not in everything
    # The worker logs through the same JSON format.
    assert any(
        json.loads(line).get("logger", "").startswith("celery")
        for line in production.log_lines("worker")
        if line.startswith("{")
    )
