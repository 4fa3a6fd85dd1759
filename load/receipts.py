"""How a load run posts delivery receipts: `POST /receipts` with `x-ins-auth-key`, as a provider does.

Receipts name sent messages by their provider id; `provider_id(i)` is the id `fill_sent` gives message
`i`, so every receipt matches a real row and the applier does real work. The requests are built before
the clock starts and go over raw keep-alive sockets (a thread each), so the client stays cheap next to
what it measures. Shared by bench_scenarios.py; the standard library only.
"""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
from typing import Any

from stack import Database, StackError

AUTH_HEADER = "x-ins-auth-key"


def provider_id(i: int) -> str:
    """The provider's id of sent message `i`, as `fill_sent` writes it."""
    return f"00000000-0000-4000-8000-{i:012x}"


def fill_sent(database: Database, start: int, n: int) -> None:
    """Inserts messages `start` to `start + n - 1` as sent a moment ago under `provider_id(i)`, waiting
    for their receipt (`delivery_status` NULL), then VACUUM ANALYZE, as autovacuum would have done."""
    database.sql(
        "INSERT INTO messages (phone_number, content, status, attempts, provider_message_id, sent_at)"
        " SELECT '+90555' || lpad(i::text, 7, '0'), 'receipt ' || i, 'sent', 1,"
        " '00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'), now()"
        f" FROM generate_series({start}, {start + n - 1}) i"
    )
    database.sql("VACUUM ANALYZE messages")


def receipt(i: int) -> dict[str, Any]:
    return {"messageId": provider_id(i), "status": "delivered", "at": "2026-12-02T10:00:03Z", "error": None}


def request_bytes(url: str, key: str, body: Any) -> bytes:
    """A whole `POST /receipts` request, ready to write to a socket."""
    host = url.removeprefix("http://")
    payload = json.dumps(body).encode()
    head = (f"POST /receipts HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"{AUTH_HEADER}: {key}\r\nContent-Length: {len(payload)}\r\n\r\n")
    return head.encode() + payload


class Connection:
    """One keep-alive connection that writes prepared requests and reads the status of each answer."""

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")

    def send(self, request: bytes) -> int:
        self.sock.sendall(request)
        status_line = self.reader.readline()
        if not status_line:
            raise StackError("the service closed the connection while receipts were posted")
        length = 0
        while (line := self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        self.reader.read(length)
        return int(status_line.split()[1])

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def post_receipts(url: str, requests: list[bytes], connections: int) -> dict[str, Any]:
    """Sends each prepared request (`request_bytes`) once, over `connections` at once; returns `started`
    (seconds since the epoch) and `seconds` from the first request to the last answer, `statuses`
    (status: count) and the latency percentiles of one request, `p50_ms` and `p99_ms`."""
    shares = [requests[k::connections] for k in range(connections)]
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    clients = [Connection(url) for _ in shares]

    def worker(client: Connection, share: list[bytes]) -> None:
        mine: dict[int, int] = {}
        took = []
        try:
            for request in share:
                sent = time.perf_counter()
                status = client.send(request)
                took.append(time.perf_counter() - sent)
                mine[status] = mine.get(status, 0) + 1
        except (OSError, StackError) as error:
            with lock:
                failures.append(str(error))
        with lock:
            latencies.extend(took)
            for status, count in mine.items():
                statuses[status] = statuses.get(status, 0) + count

    threads = [threading.Thread(target=worker, args=pair) for pair in zip(clients, shares)]
    started, clock = time.time(), time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - clock
    for client in clients:
        client.close()
    if failures:
        raise StackError(f"posting receipts failed: {failures[0]}")
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {"started": started, "seconds": seconds, "statuses": statuses, "p50_ms": cuts[49] * 1000,
            "p99_ms": cuts[98] * 1000}
