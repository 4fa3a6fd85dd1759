"""How a load run enqueues: `POST /messages/batch`, 1,000 messages a request over a few connections.

Shared by bench.py and bench_scenarios.py; the standard library only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from stack import Http, StackError

INGEST_BATCH = 1000
INGEST_CONNECTIONS = 4


def message(i: int, prefix: str) -> dict[str, str]:
    return {"to": f"+90555{i:07d}", "content": f"{prefix} {i}: Insider - Project"}


def ingest(url: str, n: int, prefix: str, fields: Callable[[int], dict[str, Any]] | None = None) -> float:
    """Enqueues `n` messages in batches over a few connections; returns the seconds it took. `fields`
    adds the optional ones (`priority`, `send_at`...) of message `i`."""
    batches = [list(range(start, min(start + INGEST_BATCH, n))) for start in range(0, n, INGEST_BATCH)]
    failures: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        client = Http(url)
        while True:
            with lock:
                if not batches or failures:
                    break
                batch = batches.pop()
            items = [{**message(i, prefix), **(fields(i) if fields else {})} for i in batch]
            status, answer = client.request("POST", "/messages/batch", {"messages": items})
            if status != 200 or answer["accepted"] != len(batch):
                with lock:
                    failures.append(f"POST /messages/batch answered {status}: {str(answer)[:300]}")
        client.close()

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(INGEST_CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise StackError(failures[0])
    return time.monotonic() - started
