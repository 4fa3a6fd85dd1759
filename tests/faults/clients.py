"""What a fault run connects with, besides the service itself.

- `Session`: one psql connection held open across statements, for a transaction that must stay open (the
  idle transaction, the repeatable-read readers) and for probes that must still get through while every
  other connection slot is taken. Each carries an application_name starting `faults-`, so the backend
  killer can spare them.
- `fill_connections`: idle connections opened straight on the wire protocol (a psql each would cost a
  process), until Postgres refuses one.
- `Producer`: the steady load, a batch through `POST /messages/batch` every 100 ms.
"""

from __future__ import annotations

import http.client
import json
import queue
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "load"))
from stack import Http, StackError  # noqa: E402

APPLICATION_PREFIX = "faults-"


class SessionLost(StackError):
    """The session's connection ended (a terminated backend, a restarted server)."""


def with_application_name(url: str, name: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}application_name={APPLICATION_PREFIX}{name}"


class Session:
    """One psql process on one connection; `run` sends statements and returns their unaligned output."""

    def __init__(self, url: str, name: str):
        self.url = with_application_name(url, name)
        self.name = name
        self._open()

    def _open(self) -> None:
        self.process = subprocess.Popen(
            ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=0", "-d", self.url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(self.process, self.lines), daemon=True).start()

    @staticmethod
    def _read(process: subprocess.Popen, lines: queue.Queue) -> None:
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    def run(self, sql: str, timeout: float = 120) -> str:
        """Runs `sql` (one or more statements) and returns what it printed; raises on an error."""
        marker = f"-- end {uuid.uuid4().hex}"
        try:
            self.process.stdin.write(f"{sql.strip().rstrip(';')};\n\\echo '{marker}'\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError) as error:
            raise SessionLost(f"session {self.name}: {error}") from error
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise StackError(f"session {self.name}: no answer within {timeout:.0f}s to {sql.split()[0]}")
            if line is None:
                raise SessionLost(f"session {self.name} lost its connection: {''.join(out).strip()[-300:]}")
            if line.rstrip("\n") == marker:
                break
            out.append(line)
        errors = [line.strip() for line in out if "ERROR:" in line or "FATAL:" in line]
        if errors:
            raise StackError(f"session {self.name}: {errors[0]}")
        return "".join(out).strip()

    def run_reconnecting(self, sql: str, timeout: float = 120) -> str:
        """`run`, with one reconnect when the connection was lost (after a restart of the server)."""
        try:
            return self.run(sql, timeout)
        except SessionLost:
            self.close()
            self._open()
            return self.run(sql, timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
                self.process.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def _read_message(conn: socket.socket) -> tuple[bytes, bytes]:
    header = _read_exactly(conn, 5)
    kind, length = header[:1], struct.unpack("!I", header[1:])[0]
    return kind, _read_exactly(conn, length - 4)


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return data


def open_idle_connection(port: int, database: str, name: str) -> socket.socket:
    """A connection that logs in (trust auth, no TLS) and then sits idle; raises StackError with the
    server's message when it is refused."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    params = {"user": "postgres", "database": database, "application_name": f"{APPLICATION_PREFIX}{name}"}
    body = struct.pack("!I", 3 << 16) + b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items())
    conn.sendall(struct.pack("!I", len(body) + 5) + body + b"\0")
    try:
        while True:
            kind, payload = _read_message(conn)
            if kind == b"E":
                fields = dict((f[:1], f[1:].decode(errors="replace")) for f in payload.split(b"\0") if f)
                raise StackError(fields.get(b"M", "refused"))
            if kind == b"R" and struct.unpack("!I", payload[:4])[0] != 0:
                raise StackError("the server asked for a password: the run's cluster should trust 127.0.0.1")
            if kind == b"Z":
                return conn
    except BaseException:
        conn.close()
        raise


def fill_connections(port: int, database: str, most: int = 300) -> tuple[list[socket.socket], str]:
    """Opens idle connections until the server refuses one (or `most` are open, as the benchmark's
    pool-exhaustion fault asks for 300); returns them and the refusal."""
    held: list[socket.socket] = []
    refusal = ""
    while len(held) < most:
        try:
            held.append(open_idle_connection(port, database, "filler"))
        except (StackError, OSError) as error:
            refusal = str(error)
            break
    return held, refusal


def close_connections(held: list[socket.socket]) -> None:
    for conn in held:
        try:
            conn.sendall(b"X\0\0\0\4")  # Terminate
        except OSError:
            pass
        conn.close()


def message(tag: str, batch: int, i: int) -> dict[str, str]:
    return {"to": f"+90555{(batch * 1000 + i) % 10_000_000:07d}", "content": f"{tag} {batch}:{i}"}


class Producer:
    """Offers `rate` messages a second through `POST /messages/batch`, a batch every 100 ms, whatever the
    service does (an open loop): a clock thread queues each batch at its time and a few workers post them,
    so one slow answer does not slow the offer. A batch that no worker could take within `STALE` seconds
    is skipped and counted: a client would have given up on it."""

    BATCH_EVERY = 0.1
    WORKERS = 16
    STALE = 2.0
    TIMEOUT = 10.0

    def __init__(self, url: str, rate: float, tag: str):
        self.url = url
        self.rate = rate
        self.tag = tag
        self.ids: list[str] = []
        self.offered = 0
        self.skipped = 0
        self.failed: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._jobs: queue.Queue[tuple[int, float, int] | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._clock, daemon=True)]
        self._threads += [threading.Thread(target=self._worker, daemon=True) for _ in range(self.WORKERS)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for _ in range(self.WORKERS):
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(self.TIMEOUT + 5)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"offered": self.offered, "enqueued": len(self.ids), "skipped": self.skipped,
                    "failed": sum(self.failed.values())}

    def _clock(self) -> None:
        batch, owed, due = 0, 0.0, time.monotonic()
        while not self._stop.is_set():
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            owed += self.rate * self.BATCH_EVERY
            size = int(owed)
            owed -= size
            if size:
                with self._lock:
                    self.offered += size
                self._jobs.put((batch, due, size))
            batch += 1
            due += self.BATCH_EVERY

    def _worker(self) -> None:
        client: Http | None = None
        while True:
            job = self._jobs.get()
            if job is None:
                break
            batch, due, size = job
            if time.monotonic() - due > self.STALE:
                with self._lock:
                    self.skipped += size
                continue
            body = {"messages": [message(self.tag, batch, i) for i in range(size)]}
            try:
                try:
                    reused = client is not None
                    client = client or Http(self.url, timeout=self.TIMEOUT)
                    status, answer = client.request("POST", "/messages/batch", body)
                except BrokenPipeError:
                    # The request could not be written: a kept-alive connection that a restarted server no
                    # longer holds. Nothing reached the server, so a client would send it again at once.
                    if not reused:
                        raise
                    client.close()
                    client = Http(self.url, timeout=self.TIMEOUT)
                    status, answer = client.request("POST", "/messages/batch", body)
            except (OSError, http.client.HTTPException, json.JSONDecodeError) as error:
                if client is not None:
                    client.close()
                client = None
                with self._lock:
                    self.failed[type(error).__name__] += size
                continue
            with self._lock:
                if status == 200:
                    self.ids.extend(item["id"] for item in answer["items"] if "id" in item)
                    if answer["rejected"]:
                        self.failed["rejected"] += answer["rejected"]
                else:
                    self.failed[f"HTTP {status}"] += size
        if client is not None:
            client.close()
