"""Tollgate's benchmark, in its production shape, on this machine.

Starts a fast loopback upstream (nginx answering a fixed completion) and a streaming
fake, runs Tollgate on PostgreSQL and Redis with a Celery worker and an ASGI server
with two workers, drives it with wrk and writes a JSON file and a table:

- requests/s at 1, 8 and 32 connections; p50/p99 latency added over calling the
  upstream directly; CPU milliseconds per request (Tollgate's web workers, and the
  whole machine);
- time to first streamed token added over the streaming upstream;
- settlement throughput of one worker (records settled per second);
- the usage log's first page and the CSV export with 1,000,000 usage records.

For scale, the same server in the same shape then runs two bare apps
(``scripts/bench_floor.py``): one answering the completion itself, one proxying to
nginx with aiohttp and nothing else (and streaming from the streaming fake, for the
first-token figure). They are the floor under Tollgate's figures on this machine.

The 1/8/32-connection runs are repeated (``--repeat``, 3 rounds by default) and
each count's median round is reported, with every round's rate beside it: on a
shared virtual machine one run can be a third slower than the next.

At the end every request must be settled, no hold may be left open and ``ledger_check``
must pass; the script says so and exits non-zero otherwise. Run it with
``bash scripts/bench``.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
DB_NAME = "tollgate_bench"
DB_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
REDIS_URL = "redis://127.0.0.1:6379/13"
NGINX_PORT, STREAM_PORT, TOLLGATE_PORT, FLOOR_PORT = 18080, 18081, 18000, 18001
PROFILE = ROOT / "artifacts" / "bench" / "web-profile-N.txt"
TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")

FIXED_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18},
    }
)
BODY = '{"model":"bench-model","max_tokens":64,"messages":[{"role":"user","content":"Say hello"}]}'

SEED = """
from decimal import Decimal
from django.contrib.auth import get_user_model
from accounts.services import account_create, api_key_create, membership_add
from billing.models import PriceGroup
from billing.pricing import token_components
from billing.services import account_credit, model_price_set
from relay.models import Channel

group = PriceGroup.objects.create(name="bench")
for model in ("bench-model", "bench-stream"):
    model_price_set(group_id=group.pk, model=model, components=token_components(input="0.15", output="0.60"))
for name, port, model in (("nginx", %(nginx)d, "bench-model"), ("stream", %(stream)d, "bench-stream")):
    channel = Channel(name=name, type="openai", base_url=f"http://127.0.0.1:{port}/v1", served_models=[model],
                      cost_prices={model: {"input": "0.10", "output": "0.40"}})
    channel.api_key = "sk-upstream-bench"
    channel.save()
account = account_create(name="Bench", price_group=group, overdraft_limit=0)
account_credit(account=account, amount=10**12, memo="bench credit")
_, secret = api_key_create(account=account, name="bench")
big = account_create(name="Big", price_group=group, overdraft_limit=0)
big_key, _ = api_key_create(account=big, name="big")
user = get_user_model().objects.create_user("bench", "bench@example.com", "bench-password-1")
membership_add(account=big, user=user, role="owner")
print(f"KEY={secret} BIG={big.pk} BIGKEY={big_key.pk}")
"""

# One million finished, settled usage records for the "Big" account, spread over 30 days.
MILLION = """
INSERT INTO usage_usagerecord (request_id, account_id, api_key_id, endpoint, model_requested,
    model_served, upstream_model, attempts, status, http_status, error_code, stream,
    input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
    estimated, price_snapshot, cost_pico, upstream_cost_pico, latency_ms, "user", created_at, settled_at)
SELECT 'req_big_' || g, %(account)s, %(key)s, 'chat.completions', 'bench-model', 'bench-model',
    'bench-model', '[]', CASE WHEN g %% 50 = 0 THEN 'upstream_error' ELSE 'success' END, 200, '',
    g %% 3 = 0, 100 + g %% 900, g %% 7 * 10, 0, 50 + g %% 400, 0, false, '{}', 0, 0, 300 + g %% 50,
    '', now() - (g || ' seconds')::interval * 2.5, now() - (g || ' seconds')::interval * 2.5
FROM generate_series(1, 1000000) AS g
"""

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '%(body)s'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %%d, "duration_us": %%d, "errors": %%d, "non2xx": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "mean_us": %%.1f}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""

NGINX_CONF = """
worker_processes 1;
daemon off;
pid %(dir)s/nginx.pid;
error_log %(dir)s/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %(dir)s/body;
  proxy_temp_path %(dir)s/proxy;
  fastcgi_temp_path %(dir)s/fastcgi;
  uwsgi_temp_path %(dir)s/uwsgi;
  scgi_temp_path %(dir)s/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  server {
    listen 127.0.0.1:%(port)d;
    location / {
      default_type application/json;
      return 200 '%(body)s';
    }
  }
}
"""


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def ensure_tools() -> None:
    missing = [
        pkg for tool, pkg in (("nginx", "nginx-light"), ("wrk", "wrk")) if not shutil.which(tool)
    ]
    if missing:
        log(f"installing {', '.join(missing)} from Debian's packages")
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *missing], check=True)


def env() -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": os.environ.get("BENCH_DATABASE_URL", DB_URL),
        "REDIS_URL": REDIS_URL,
        "DEBUG": "false",
        "SECRET_KEY": "bench-secret-key-not-for-production-0123456789abcdefghij",
        # INFO: the per-request JSON access line is part of the measured work.
        "LOG_LEVEL": "INFO",
        "CONN_MAX_AGE": "600",
        # The usage-log timings sign in over plain HTTP on loopback.
        "SECURE_COOKIES": "false",
    }


def manage(*args: str, capture: bool = False) -> str:
    result = subprocess.run(
        [PY, "manage.py", *args], cwd=ROOT, env=env(), check=True, capture_output=capture, text=True
    )
    return result.stdout if capture else ""


def autovacuum_on() -> bool:
    """Run PostgreSQL as production does, with autovacuum. A server set up for test
    runs may have it off; then every update (the account's ``held``, each hold and
    usage record settled) leaves a dead row that nothing clears, and PostgreSQL's
    cost per request climbs from round to round. Returns whether it had to be
    turned on (and so must be turned off again at the end)."""
    if psql("SHOW autovacuum", db="postgres") == "on":
        return False
    psql("ALTER SYSTEM SET autovacuum = on", db="postgres")
    psql("SELECT pg_reload_conf()", db="postgres")
    deadline = time.monotonic() + 10
    while psql("SHOW autovacuum", db="postgres") != "on":
        if time.monotonic() > deadline:
            raise SystemExit("PostgreSQL did not turn autovacuum on")
        time.sleep(0.1)
    return True


def autovacuum_restore() -> None:
    psql("ALTER SYSTEM RESET autovacuum", db="postgres")
    psql("SELECT pg_reload_conf()", db="postgres")


def psql(sql: str, db: str = DB_NAME) -> str:
    return subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-qAtc",
            sql,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def server_command(server: str, app: str, port: int) -> list[str]:
    """The ASGI server with two workers, as in production (the Procfile)."""
    if server == "granian":
        return [
            *(str(ROOT / ".venv/bin/granian"), "--interface", "asgi", "--workers", "2"),
            *("--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop"),
            *("--log-level", "warning", "--no-ws", app),
        ]
    return [
        *(PY, "-m", "uvicorn", app, "--workers", "2", "--port", str(port)),
        *("--loop", "uvloop", "--http", "httptools", "--lifespan", "off"),
        *("--log-level", "warning", "--no-access-log"),
    ]


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def cpu_ms(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except FileNotFoundError:
            pass
    return total * TICK_MS


def machine_busy_ms() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) * TICK_MS


def pids_named(*names: str) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().split("(", 1)[1].split(")", 1)[0] in names:
                found.append(int(stat.parent.name))
        except (FileNotFoundError, IndexError):
            pass
    return found


def cpu_groups(web: list[int], worker: list[int]) -> dict[str, float]:
    """CPU time so far of each part of the running system, in ms."""
    return {
        "web": cpu_ms(web),
        "celery_worker": cpu_ms(worker),
        "postgres": cpu_ms(pids_named("postgres")),
        "redis": cpu_ms(pids_named("redis-server")),
        "nginx_upstream": cpu_ms(pids_named("nginx")),
    }


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def wrk(url: str, script: Path, connections: int, seconds: int) -> dict:
    threads = min(connections, 2)
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data = json.loads(re.search(r"WRKJSON (\{.*\})", out).group(1))
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    return data


def start_profile(pid: int, out: Path, seconds: int) -> subprocess.Popen:
    """py-spy sampling the web server's processes (folded stacks, idle time left out)."""
    if not shutil.which("py-spy", path=str(ROOT / ".venv" / "bin")):
        subprocess.run([PY, "-m", "pip", "install", "-q", "py-spy"], check=True)
    spy = str(ROOT / ".venv" / "bin" / "py-spy")
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [spy, "record", "--pid", str(pid), "--subprocesses", "--duration", str(seconds)]
    cmd += ["--rate", "250"]
    cmd += ["--format", "raw", "--nonblocking", "-o", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_summary(path: Path, top: int = 20) -> dict[str, dict[str, float]]:
    """Where the worker's samples were: the functions they were in (self) and the
    modules they passed through (inclusive), as percentages of all samples."""
    own: dict[str, int] = {}
    through: dict[str, int] = {}
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        samples += n
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1][0]] = own.get(frames[-1][0], 0) + n
        for module in {module for _, module in frames}:
            through[module] = through.get(module, 0) + n

    def ranked(counts: dict[str, int]) -> dict[str, float]:
        best = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return {name: round(100 * n / max(samples, 1), 1) for name, n in best}

    return {"self": ranked(own), "inclusive_by_module": ranked(through)}


_FRAME = re.compile(
    r"(.*?) \((?:.*/site-packages/|.*/lib/python3[.0-9]*/|" + re.escape(str(ROOT)) + "/)?([^:]+)"
)


def _frame(frame: str) -> tuple[str, str]:
    """("function (module)", "module") from py-spy's "function (path/module.py:line)"."""
    match = _FRAME.match(frame)
    if not match:
        return frame, frame
    module = match.group(2).removesuffix(".py").replace("/", ".")
    return f"{match.group(1)} ({module})", module


def ttft(url: str, key: str, n: int) -> list[float]:
    body = {
        "model": "bench-stream",
        "stream": True,
        "messages": [{"role": "user", "content": "Stream please"}],
    }
    samples = []
    with httpx.Client(timeout=30) as client:
        for _ in range(n):
            start = time.perf_counter()
            with client.stream(
                "POST", url, json=body, headers={"authorization": f"Bearer {key}"}
            ) as response:
                first = True
                for _chunk in response.iter_raw():
                    if first:
                        samples.append((time.perf_counter() - start) * 1000)
                        first = False
    return samples


def ttft_pair(url: str, key: str, repeat: int) -> tuple[list[float], list[float]]:
    """First-token times calling the streaming upstream directly and through ``url``,
    in turns, so both see the machine alike."""
    direct: list[float] = []
    through: list[float] = []
    for _ in range(2 * repeat):
        direct += ttft(f"http://127.0.0.1:{STREAM_PORT}/v1/chat/completions", key, 50)
        through += ttft(url, key, 50)
    return direct, through


def unsettled() -> int:
    return int(psql("SELECT count(*) FROM usage_usagerecord WHERE settled_at IS NULL"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--server", choices=["granian", "uvicorn"], default="granian")
    parser.add_argument("--skip-million", action="store_true")
    parser.add_argument(
        "--skip-floor", action="store_true", help="skip the bare server and bare proxy runs"
    )
    parser.add_argument(
        "--serve", action="store_true", help="start everything, then just serve (to poke at)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds of the 1/8/32-connection runs (median kept)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the web workers with py-spy during each run (skews its figures a little)",
    )
    parser.add_argument("--out", default=str(ROOT / "artifacts" / "bench" / "results.json"))
    args = parser.parse_args()

    ensure_tools()
    subprocess.run(["bash", "scripts/services"], cwd=ROOT, check=True)
    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
    procs: list[subprocess.Popen] = []
    results: dict = {"server": args.server, "seconds_per_run": args.seconds}
    turned_on = autovacuum_on()
    results["postgres_autovacuum"] = "turned on for the run" if turned_on else "on"

    def start(cmd: list[str], **kw) -> subprocess.Popen:
        # Each process logs to its own file in the work directory (named in the output).
        log_file = (work / f"process-{len(procs)}.log").open("w")
        kw.setdefault("stdout", log_file)
        kw.setdefault("stderr", subprocess.STDOUT)
        kw.setdefault("env", env())
        proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, **kw)
        procs.append(proc)
        return proc

    try:
        log(f"processes log to {work}")
        log("fresh database, migrations, seed")
        psql(f"DROP DATABASE IF EXISTS {DB_NAME}", db="postgres")
        psql(f"CREATE DATABASE {DB_NAME}", db="postgres")
        subprocess.run(["redis-cli", "-n", "13", "flushdb"], check=True, capture_output=True)
        manage("migrate", "--noinput", "-v", "0")
        manage("collectstatic", "--noinput", "-v", "0")
        seeded = manage(
            "shell", "-c", SEED % {"nginx": NGINX_PORT, "stream": STREAM_PORT}, capture=True
        )
        values = dict(re.findall(r"(\w+)=(\S+)", seeded))
        key = values["KEY"]

        (work / "nginx.conf").write_text(
            NGINX_CONF % {"dir": work, "port": NGINX_PORT, "body": FIXED_COMPLETION}
        )
        start(["nginx", "-c", str(work / "nginx.conf"), "-p", str(work)])
        start(
            [
                PY,
                "-m",
                "uvicorn",
                "scripts.bench_upstream:app",
                "--port",
                str(STREAM_PORT),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            # The first chunk comes at once (that is what is measured), the rest 5 ms apart.
            env={**env(), "BENCH_CHUNK_DELAY_MS": "5"},
        )
        worker = start(
            [
                PY,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--pool=solo",
                "-l",
                "warning",
                "--without-gossip",
                "--without-mingle",
            ]
        )
        server = start(server_command(args.server, "config.asgi:application", TOLLGATE_PORT))
        for port in (NGINX_PORT, STREAM_PORT, TOLLGATE_PORT):
            wait_http(f"http://127.0.0.1:{port}/")
        script = work / "post.lua"
        script.write_text(WRK_SCRIPT % {"body": BODY, "key": key})
        direct = f"http://127.0.0.1:{NGINX_PORT}/v1/chat/completions"
        gateway = f"http://127.0.0.1:{TOLLGATE_PORT}/v1/chat/completions"
        workers = children(server.pid) or [server.pid]
        if args.serve:
            log(f"serving until interrupted: {gateway} (key {key}); wrk script {script}")
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                server.wait()
            except KeyboardInterrupt:
                pass
            return 0

        log("warm-up")
        total_requests = wrk(gateway, script, 8, 3)["requests"]
        # Requests in flight when wrk stops are not counted by it but are recorded.
        cut_off = 8 + (1 + 8 + 32) * args.repeat + 32  # warm-up, runs, settlement burst
        rounds: dict[int, list[dict]] = {1: [], 8: [], 32: []}
        for round_no, connections in [(r, c) for r in range(args.repeat) for c in rounds]:
            base = wrk(direct, script, connections, args.seconds)
            cpu0, busy0 = cpu_ms(workers), machine_busy_ms()
            parts0 = cpu_groups(workers, [worker.pid, *children(worker.pid)])
            spy = None
            profile = PROFILE.with_name(f"web-profile-{connections}.txt")
            if args.profile and round_no == 0:
                spy = start_profile(server.pid, profile, args.seconds)
            run = wrk(gateway, script, connections, args.seconds)
            if spy is not None:
                spy.wait(30)
                results.setdefault("profile", {})[connections] = profile_summary(profile)
            cpu1, busy1 = cpu_ms(workers), machine_busy_ms()
            parts1 = cpu_groups(workers, [worker.pid, *children(worker.pid)])
            total_requests += run["requests"]
            measured = {
                "rps": round(run["rps"], 1),
                "direct_rps": round(base["rps"], 1),
                "p50_ms": run["p50_us"] / 1000,
                "p99_ms": run["p99_us"] / 1000,
                "added_p50_ms": round((run["p50_us"] - base["p50_us"]) / 1000, 3),
                "added_p99_ms": round((run["p99_us"] - base["p99_us"]) / 1000, 3),
                "web_cpu_ms_per_request": round((cpu1 - cpu0) / run["requests"], 3),
                "machine_cpu_ms_per_request": round((busy1 - busy0) / run["requests"], 3),
                "errors": run["errors"] + run["non2xx"],
                "cpu_ms_per_request_by_part": {
                    part: round((parts1[part] - parts0[part]) / run["requests"], 3)
                    for part in parts0
                },
            }
            rounds[connections].append(measured)
            log(f"{connections:>2} connections, round {round_no + 1}: {measured}")
        # Each connection count's figures are those of its median round by requests/s
        # (this machine's speed varies from minute to minute); the others' rates stay.
        results["runs"] = {}
        for connections, runs in rounds.items():
            ranked = sorted(runs, key=lambda m: m["rps"])
            results["runs"][connections] = {
                **ranked[(len(ranked) - 1) // 2],
                "rps_of_each_round": [m["rps"] for m in runs],
            }

        if not args.skip_floor:
            results["floor"] = {}
            for app in ("answer", "proxy"):
                floor_server = start(
                    server_command(args.server, f"scripts.bench_floor:{app}", FLOOR_PORT),
                    env={**env(), "BENCH_ANSWER": FIXED_COMPLETION, "BENCH_UPSTREAM": direct},
                )
                wait_http(f"http://127.0.0.1:{FLOOR_PORT}/")
                floor_workers = children(floor_server.pid) or [floor_server.pid]
                floor_url = f"http://127.0.0.1:{FLOOR_PORT}/v1/chat/completions"
                wrk(floor_url, script, 8, 2)  # warm-up
                results["floor"][app] = {}
                for connections in (1, 32):
                    base = wrk(direct, script, connections, args.seconds)
                    cpu0 = cpu_ms(floor_workers)
                    run = wrk(floor_url, script, connections, args.seconds)
                    results["floor"][app][connections] = {
                        "rps": round(run["rps"], 1),
                        "added_p50_ms": round((run["p50_us"] - base["p50_us"]) / 1000, 3),
                        "web_cpu_ms_per_request": round(
                            (cpu_ms(floor_workers) - cpu0) / run["requests"], 3
                        ),
                    }
                if app == "proxy":
                    # The floor under the added time to the first streamed token.
                    direct_ttft, floor_ttft = ttft_pair(
                        f"http://127.0.0.1:{FLOOR_PORT}/stream", key, args.repeat
                    )
                    results["floor"]["proxy"]["ttft_added_p50_ms"] = round(
                        statistics.median(floor_ttft) - statistics.median(direct_ttft), 3
                    )
                os.killpg(floor_server.pid, signal.SIGTERM)
                floor_server.wait(15)
                log(f"floor, {app}: {results['floor'][app]}")

        log("time to first streamed token")
        direct_ttft, gateway_ttft = ttft_pair(gateway, key, args.repeat)
        total_requests += len(gateway_ttft)
        results["ttft"] = {
            "direct_p50_ms": round(statistics.median(direct_ttft), 3),
            "gateway_p50_ms": round(statistics.median(gateway_ttft), 3),
            "added_p50_ms": round(
                statistics.median(gateway_ttft) - statistics.median(direct_ttft), 3
            ),
        }
        log(f"ttft: {results['ttft']}")

        log("settlement throughput of one worker")
        deadline = time.monotonic() + 60
        while unsettled() and time.monotonic() < deadline:
            time.sleep(0.5)
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
        burst = wrk(gateway, script, 32, max(5, args.seconds))
        total_requests += burst["requests"]
        pending = unsettled()
        started = time.monotonic()
        worker = start(
            [
                PY,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--pool=solo",
                "-l",
                "warning",
                "--without-gossip",
                "--without-mingle",
            ]
        )
        manage(
            "shell",
            "-c",
            "from billing.tasks import usage_settle_pending; usage_settle_pending.delay()",
        )
        while unsettled():
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        # Each batch stamps its records with the time it started, so the worker's own
        # rate is the records of every batch but the last over the time from the
        # first batch's start to the last's (process start-up excluded).
        batches = [
            line.split("|")
            for line in psql(
                "SELECT extract(epoch FROM settled_at), count(*) FROM usage_usagerecord "
                f"WHERE settled_at > now() - interval '{int(elapsed) + 5} seconds' "
                "GROUP BY settled_at ORDER BY settled_at"
            ).splitlines()
        ]
        span = float(batches[-1][0]) - float(batches[0][0])
        in_span = sum(int(n) for _, n in batches[:-1])
        results["settlement"] = {
            "records": pending,
            "batches": len(batches),
            "records_per_second": round(in_span / span, 1) if span > 0 else None,
            "wall_seconds_with_start_up": round(elapsed, 2),
        }
        log(f"settlement: {results['settlement']}")

        if not args.skip_million:
            log("1,000,000 usage records for the usage-log timings")
            psql(MILLION % {"account": values["BIG"], "key": values["BIGKEY"]})
            psql("ANALYZE usage_usagerecord")
            with httpx.Client(base_url=f"http://127.0.0.1:{TOLLGATE_PORT}", timeout=600) as browser:
                browser.get("/login/")
                browser.post(
                    "/login/",
                    data={
                        "username": "bench",
                        "password": "bench-password-1",
                        "csrfmiddlewaretoken": browser.cookies["csrftoken"],
                    },
                    headers={"referer": f"http://127.0.0.1:{TOLLGATE_PORT}/login/"},
                )
                pages = []
                for _ in range(20):
                    start_t = time.perf_counter()
                    response = browser.get("/usage/")
                    pages.append((time.perf_counter() - start_t) * 1000)
                    assert response.status_code == 200 and "req_big_1" in response.text, (
                        response.status_code
                    )
                older = (
                    re.search(r'href="\?([^"]*before=[^"]+)"', response.text)
                    .group(1)
                    .replace("&amp;", "&")
                )
                deep = []
                for _ in range(10):
                    start_t = time.perf_counter()
                    browser.get(f"/usage/?{older}")
                    deep.append((time.perf_counter() - start_t) * 1000)
                filtered = []
                for _ in range(10):
                    start_t = time.perf_counter()
                    browser.get("/usage/?status=upstream_error&model=bench-model")
                    filtered.append((time.perf_counter() - start_t) * 1000)
                start_t = time.perf_counter()
                size = lines = 0
                with browser.stream("GET", "/usage/export.csv") as export:
                    first_byte = None
                    for chunk in export.iter_raw():
                        if first_byte is None:
                            first_byte = (time.perf_counter() - start_t) * 1000
                        size += len(chunk)
                        lines += chunk.count(b"\n")
                export_s = time.perf_counter() - start_t
            results["usage_log_1m"] = {
                "first_page_p50_ms": round(statistics.median(pages), 1),
                "second_page_p50_ms": round(statistics.median(deep), 1),
                "filtered_page_p50_ms": round(statistics.median(filtered), 1),
                "csv_rows": lines - 1,
                "csv_megabytes": round(size / 1e6, 1),
                "csv_first_byte_ms": round(first_byte or 0, 1),
                "csv_seconds": round(export_s, 1),
            }
            log(f"usage log: {results['usage_log_1m']}")

        log("waiting for every request to be settled")
        deadline = time.monotonic() + 120
        while unsettled() and time.monotonic() < deadline:
            time.sleep(0.5)
        served = int(
            psql("SELECT count(*) FROM usage_usagerecord WHERE request_id NOT LIKE 'req_big_%%'")
        )
        left = unsettled()
        open_holds = int(psql("SELECT count(*) FROM billing_hold WHERE status = 'open'"))
        check = subprocess.run(
            [PY, "manage.py", "ledger_check"], cwd=ROOT, env=env(), capture_output=True, text=True
        )
        results["integrity"] = {
            "requests_sent": total_requests,
            # wrk stops with a request in flight on each connection, and may have one
            # answered but not yet counted: Tollgate records those too (as served, or
            # cancelled when the client left), but wrk does not count them as sent.
            "cut_off_allowance": 2 * cut_off,
            "usage_records": served,
            "unsettled": left,
            # Every request has ended: a hold still open was left behind.
            "open_holds": open_holds,
            "ledger_check": "passed" if check.returncode == 0 else "FAILED",
        }
        log(f"integrity: {results['integrity']}")
        if check.returncode:
            print(check.stderr)
    finally:
        for proc in reversed(procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)
        if turned_on:
            autovacuum_restore()

    results["machine"] = {
        "cpus": os.cpu_count(),
        "cpu_model": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "?",
        ),
        "python": sys.version.split()[0],
        "postgres": psql("SHOW server_version", db="postgres"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print_table(results)
    ok = (
        results["integrity"]["unsettled"] == 0
        and results["integrity"]["open_holds"] == 0
        and results["integrity"]["ledger_check"] == "passed"
        and 0
        <= results["integrity"]["usage_records"] - results["integrity"]["requests_sent"]
        <= results["integrity"]["cut_off_allowance"]
    )
    print("Every request settled and the ledger reconciles." if ok else "INTEGRITY CHECK FAILED")
    return 0 if ok else 1


def print_table(r: dict) -> None:
    print()
    print("| Measure | 1 conn | 8 conns | 32 conns |")
    print("| --- | --- | --- | --- |")
    runs = r["runs"]
    for label, key in (
        ("Requests/s through Tollgate", "rps"),
        ("Requests/s calling nginx directly", "direct_rps"),
        ("Added p50 latency (ms)", "added_p50_ms"),
        ("Added p99 latency (ms)", "added_p99_ms"),
        ("Tollgate web CPU per request (ms)", "web_cpu_ms_per_request"),
        ("Whole-machine CPU per request (ms)", "machine_cpu_ms_per_request"),
    ):
        print(f"| {label} | " + " | ".join(str(runs[c][key]) for c in (1, 8, 32)) + " |")
    print(
        "| Requests/s of each round (median shown) | "
        + " | ".join(" / ".join(map(str, runs[c]["rps_of_each_round"])) for c in (1, 8, 32))
        + " |"
    )
    parts = runs[32]["cpu_ms_per_request_by_part"]
    print(
        "| CPU per request at 32 conns, by part (ms) | "
        + ", ".join(f"{k} {v}" for k, v in parts.items())
        + " | | |"
    )
    for app, label in (
        ("answer", "Floor: the bare server answering itself"),
        ("proxy", "Floor: a bare proxy (server + aiohttp, no auth, no database)"),
    ):
        if app in r.get("floor", {}):
            f = r["floor"][app]
            print(
                f"| {label}: req/s, added p50 (ms), web CPU per request (ms) | "
                f"{f[1]['rps']}, {f[1]['added_p50_ms']}, {f[1]['web_cpu_ms_per_request']} | | "
                f"{f[32]['rps']}, {f[32]['added_p50_ms']}, {f[32]['web_cpu_ms_per_request']} |"
            )
    print()
    floor_ttft = r.get("floor", {}).get("proxy", {}).get("ttft_added_p50_ms")
    print(
        f"Added time to first streamed token (p50): {r['ttft']['added_p50_ms']} ms"
        + (f" (the bare streaming proxy: {floor_ttft} ms)" if floor_ttft is not None else "")
    )
    print(f"Settlement, one worker: {r['settlement']['records_per_second']} records/s")
    print(f"PostgreSQL autovacuum: {r['postgres_autovacuum']}")
    if "usage_log_1m" in r:
        u = r["usage_log_1m"]
        print(
            f"Usage log at 1M records: first page {u['first_page_p50_ms']} ms, next page "
            f"{u['second_page_p50_ms']} ms, filtered {u['filtered_page_p50_ms']} ms; CSV export of "
            f"{u['csv_rows']} rows ({u['csv_megabytes']} MB) in {u['csv_seconds']} s"
        )


if __name__ == "__main__":
    sys.exit(main())
