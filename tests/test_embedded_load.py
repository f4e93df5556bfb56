"""A newcomer's busy first script against the real run command, with no retries.

``bash scripts/run`` with no environment but where to listen and where to keep its
files (an SQLite database and the state directory in a temporary folder): the
official ``openai`` client makes 200 calls back to back, 200 more from 4 threads
and 64 streams at once, while a browser's keep-alive connection loads console pages
and their static files. Every call is answered (no retries), every stream ends
with ``[DONE]``, every page and file loads, every request has its settled usage
record and the demo account is charged exactly their sum.
"""

import concurrent.futures
import os
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def embedded(tmp_path):
    port = _free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PORT": str(port),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'embedded.sqlite3'}",
        "TOLLGATE_STATE_DIR": str(tmp_path / "state"),
    }
    log = (tmp_path / "run.log").open("w+")
    process = subprocess.Popen(
        ["bash", "scripts/run"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, (tmp_path / "run.log").read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()
            time.sleep(0.3)
        output = (tmp_path / "run.log").read_text()
        key = re.search(r"API key:\s+(sk-tg-\S+)", output).group(1)
        password = re.search(r"Demo user: demo / (\S+)", output).group(1)
        yield {
            "base": base,
            "key": key,
            "password": password,
            "db": tmp_path / "embedded.sqlite3",
            "output": output,
            "log": tmp_path / "run.log",
        }
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def _browse(base: str, password: str, stop: threading.Event, seen: list) -> None:
    """A browser on one keep-alive connection: sign in, then load pages and their
    static files over and over."""
    with httpx.Client(base_url=base, timeout=30) as browser:
        page = browser.get("/login/")
        token = browser.cookies["csrftoken"]
        signed_in = browser.post(
            "/login/",
            data={"username": "demo", "password": password, "csrfmiddlewaretoken": token},
            headers={"referer": f"{base}/login/"},
        )
        seen.append(("/login/", signed_in.status_code))
        assets = set(re.findall(r'(?:href|src)="(/static/[^"]+)"', page.text))
        while not stop.is_set():
            for path in ["/", "/usage/", "/billing/", "/keys/", "/models/", *sorted(assets)]:
                seen.append((path, browser.get(path).status_code))


def test_a_busy_first_script_gets_every_answer(embedded):
    client = openai.OpenAI(
        base_url=f"{embedded['base']}/v1", api_key=embedded["key"], max_retries=0, timeout=60
    )
    messages = [{"role": "user", "content": "Hello!"}]

    def call(_: int = 0) -> str:
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        return reply.usage.model_extra["cost"]

    def stream(_: int = 0) -> str:
        chunks = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = [c.usage for c in chunks if c.usage is not None]
        assert len(usage) == 1
        return usage[0].model_extra["cost"]

    stop = threading.Event()
    pages: list = []
    browser = threading.Thread(
        target=_browse, args=(embedded["base"], embedded["password"], stop, pages)
    )
    browser.start()
    try:
        costs = [call() for _ in range(200)]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            costs += list(pool.map(call, range(200)))
        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            costs += list(pool.map(stream, range(64)))
    finally:
        stop.set()
        browser.join(60)
    failed = [(path, status) for path, status in pages if status >= 400]
    assert pages and not failed, failed[:10]
    assert ("/login/", 302) in pages

    # An answer goes out before its usage record is written (SQLite has one writer):
    # every one of them is written and settled shortly after.
    db = sqlite3.connect(embedded["db"])
    deadline = time.monotonic() + 60
    settled = "SELECT count(*) FROM usage_usagerecord WHERE settled_at IS NOT NULL"
    while db.execute(settled).fetchone()[0] < len(costs):
        assert time.monotonic() < deadline, "usage records missing or left unsettled"
        time.sleep(0.5)
    statuses = dict(
        db.execute("SELECT status, count(*) FROM usage_usagerecord GROUP BY status").fetchall()
    )
    assert statuses == {"success": 464}
    balance, held = db.execute(
        "SELECT balance, held FROM accounts_account WHERE name = 'Demo'"
    ).fetchone()
    # What the clients were told, exactly; the account is charged that in whole
    # micro-USD and carries the rest.
    exact = sum(Decimal(c) for c in costs) * 10**12
    (carry,) = db.execute(
        "SELECT pico FROM billing_carry c JOIN accounts_account a ON a.id = c.account_id "
        "WHERE a.name = 'Demo'"
    ).fetchone()
    assert (balance, held) == (10_000_000 - (exact - carry) / 10**6, 0)
    log = embedded["log"].read_text()
    assert "could not be" not in log and "Traceback" not in log, log[-3000:]
    # The first run prints no notice a newcomer must decode.
    for notice in ("W047", "Editable installation", "Warning:"):
        assert notice not in embedded["output"], embedded["output"]
