"""Steady client traffic against a gateway while a test breaks something under it."""

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson


@dataclass
class Result:
    request_id: str
    stream: bool
    started: float
    elapsed: float
    status: int | None  # None: the connection failed or timed out
    error: dict[str, Any] | None = None
    completed: bool = False  # a whole answer (a stream that reached [DONE])


def error_of(raw: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return data.get("error") if isinstance(data, dict) else None


def send(client: httpx.Client, secret: str, request_id: str, *, stream: bool) -> Result:
    body = {
        "model": "gpt-4o-mini",
        # The marker lets a test match each upstream call with its request.
        "messages": [{"role": "user", "content": f"marker {request_id}"}],
        "max_tokens": 64,
        "stream": stream,
    }
    headers = {"authorization": f"Bearer {secret}", "x-request-id": request_id}
    started = time.monotonic()
    result = Result(request_id=request_id, stream=stream, started=started, elapsed=0, status=None)
    try:
        if stream:
            with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
                raw = r.read()
            result.status = r.status_code
            if r.status_code == 200:
                result.completed = raw.rstrip().endswith(b"data: [DONE]")
                if not result.completed:
                    last = raw.rstrip().rsplit(b"\n\n", 1)[-1].removeprefix(b"data: ")
                    result.error = error_of(last)
            else:
                result.error = error_of(raw)
        else:
            r = client.post("/v1/chat/completions", json=body, headers=headers)
            result.status = r.status_code
            result.completed = r.status_code == 200 and "choices" in r.json()
            if r.status_code != 200:
                result.error = error_of(r.content)
    except httpx.HTTPError:
        pass
    result.elapsed = time.monotonic() - started
    return result


class Load:
    """``workers`` clients sending back to back until stopped; every third a stream."""

    def __init__(self, url: str, secret: str, *, prefix: str, workers: int = 8) -> None:
        self.url = url
        self.secret = secret
        self.prefix = prefix
        self.workers = workers
        self.results: list[Result] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ids = itertools.count()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                n = next(self._ids)
                result = send(client, self.secret, f"{self.prefix}-{n}", stream=n % 3 == 0)
                with self._lock:
                    self.results.append(result)

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        assert not any(t.is_alive() for t in self._threads), "a client hung"

    def between(self, start: float, end: float) -> list[Result]:
        with self._lock:
            return [r for r in self.results if start <= r.started and r.started + r.elapsed <= end]
