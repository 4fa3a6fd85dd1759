"""What a load run starts, as separate processes, and how it measures them.

A fresh Postgres database (dropped afterwards), the stand-in provider (`insider-messaging mock-provider`)
and `insider-messaging serve` on it, each on a free port; where status webhooks are on, the receiver of
load/status_receiver.py too. CPU seconds and RSS are read from /proc.
Shared by bench.py, sent_list.py and scenarios.py; the standard library only.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Signs the status events of a run with status webhooks on (`whsec_` and the base64 of 24 bytes).
STATUS_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"insider-messaging bench!").decode()


class StackError(RuntimeError):
    """Something the run needs did not come up or did not behave; the message says what."""


def psql(url: str, sql: str) -> str:
    """Runs `sql` with psql against `url` and returns its unaligned, tuples-only output."""
    done = subprocess.run(
        ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise StackError(f"psql failed on {sql.split()[0]}: {done.stderr.strip()}")
    return done.stdout.strip()


class Database:
    """A Postgres database of the run's own, migrated by the binary, dropped by `drop()`."""

    def __init__(self, binary: Path, admin_url: str = ADMIN_URL):
        self.admin_url = admin_url
        self.name = f"bench_{uuid.uuid4().hex[:12]}"
        psql(admin_url, f"CREATE DATABASE {self.name}")
        base = admin_url.rsplit("/", 1)[0]
        self.url = f"{base}/{self.name}"
        migrated = subprocess.run(
            [str(binary), "migrate"],
            env={**os.environ, "DATABASE_URL": self.url, "RUST_LOG": "warn"},
            capture_output=True,
            text=True,
        )
        if migrated.returncode != 0:
            raise StackError(f"migrate failed: {migrated.stderr.strip()}")

    def sql(self, statement: str) -> str:
        return psql(self.url, statement)

    def scalar(self, statement: str) -> float:
        return float(self.sql(statement) or 0)

    def drop(self) -> None:
        psql(self.admin_url, f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A child process with its log in a file, measured through /proc."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "w")
        self.started_at = time.monotonic()
        self.popen = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_seconds(self) -> float:
        """User plus system time so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def _status_kb(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise StackError(f"{field} missing from /proc/{self.pid}/status")

    def rss_mb(self) -> float:
        return self._status_kb("VmRSS") / 1024

    def peak_rss_mb(self) -> float:
        return self._status_kb("VmHWM") / 1024

    def tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then the exit code (SIGKILL, and -9, if it does not exit within `timeout`)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return self.popen.returncode


def postgres_cpu_seconds() -> float:
    """CPU so far of every process of the local Postgres cluster (backends, WAL writer, autovacuum...),
    those that have ended included: the postmaster reaps its backends, and their CPU is then its children's.
    Other sessions' backends count too: measure on an otherwise idle cluster."""
    return cpu_seconds_of("postgres")


def redis_cpu_seconds() -> float:
    """CPU so far of the local Redis."""
    return cpu_seconds_of("redis-server")


def cpu_seconds_of(command: str) -> float:
    total = 0
    for pid in subprocess.run(["pgrep", "-x", command], capture_output=True, text=True).stdout.split():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a backend that ended meanwhile
        # utime and stime, then cutime and cstime: the children it has waited for (a backend that ended
        # during the window took its CPU with it when only the live processes were summed).
        total += sum(int(field) for field in fields[11:15])
    return total / CLOCK_TICKS


class Http:
    """One keep-alive connection to `base_url`, JSON in and out."""

    def __init__(self, base_url: str, timeout: float = 60):
        host, port = base_url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        payload = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        self.conn.request(method, path, body=payload, headers=headers)
        response = self.conn.getresponse()
        raw = response.read()
        return response.status, (json.loads(raw) if raw else None)

    def close(self) -> None:
        self.conn.close()


def wait_until(what: str, condition, timeout: float, every: float = 0.05) -> float:
    """Polls `condition` until it holds; returns the seconds it took, or raises after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise StackError(f"timed out after {timeout:.0f}s waiting until {what}")
        time.sleep(every)
    return time.monotonic() - started


def answers(url: str, path: str) -> bool:
    try:
        status, _ = Http(url, timeout=1).request("GET", path)
        return status == 200
    except (OSError, http.client.HTTPException, ValueError):
        return False


class Stack:
    """A database, the stand-in provider and `serve` (`replicas` of it, 0 for none), started in that order
    and stopped in reverse. `serve` and `url` are the first replica; `replicas` and `urls` all of them.

    With `callback_key`, every replica takes it as `CALLBACK_AUTH_KEY` and the stand-in posts a delivery
    receipt for each accepted message to the first replica's `/receipts` (its `--receipts-url`, one
    second after the 202 by default). With `status_webhooks`, load/status_receiver.py runs too and every
    replica delivers its status events there (`STATUS_WEBHOOK_URL`, `STATUS_WEBHOOK_SECRET`)."""

    def __init__(self, binary: Path, serve_env: dict[str, str], provider_args: list[str] | None = None,
                 replicas: int = 1, callback_key: str | None = None, status_webhooks: bool = False):
        self.binary = binary
        self.log_dir = Path(tempfile.mkdtemp(prefix="insider-load-"))
        self.database = Database(binary)
        self.provider = None
        self.receiver = None
        self.serve = None
        self.replicas: list[Process] = []
        # Known before the stand-in starts, which may post receipts to the first.
        ports = [free_port() for _ in range(replicas)]
        self.urls: list[str] = [f"http://127.0.0.1:{port}" for port in ports]
        serve_env = dict(serve_env)
        provider_args = list(provider_args or [])
        try:
            if callback_key is not None:
                serve_env["CALLBACK_AUTH_KEY"] = callback_key
                provider_args += ["--receipts-url", f"{self.urls[0]}/receipts", "--receipts-key", callback_key]
            if status_webhooks:
                receiver_port = free_port()
                self.receiver_url = f"http://127.0.0.1:{receiver_port}"
                self.receiver = Process(
                    "status-receiver",
                    [sys.executable, str(ROOT / "load" / "status_receiver.py"), "--addr",
                     f"127.0.0.1:{receiver_port}"],
                    dict(os.environ),
                    self.log_dir,
                )
                wait_until("the status receiver answers", lambda: answers(self.receiver_url, "/stats"), 10)
                serve_env["STATUS_WEBHOOK_URL"] = f"{self.receiver_url}/events"
                serve_env["STATUS_WEBHOOK_SECRET"] = STATUS_WEBHOOK_SECRET
            provider_port = free_port()
            self.provider_url = f"http://127.0.0.1:{provider_port}"
            self.provider = Process(
                "provider",
                [str(binary), "mock-provider", "--addr", f"127.0.0.1:{provider_port}", *provider_args],
                {**os.environ, "RUST_LOG": "warn"},
                self.log_dir,
            )
            wait_until("the stand-in provider answers", lambda: answers(self.provider_url, "/stats"), 10)
            for number, (port, url) in enumerate(zip(ports, self.urls)):
                env = {
                    "PATH": os.environ.get("PATH", ""),
                    "DATABASE_URL": self.database.url,
                    "REDIS_URL": REDIS_URL,
                    "WEBHOOK_URL": f"{self.provider_url}/hook",
                    "HTTP_ADDR": f"127.0.0.1:{port}",
                    **serve_env,
                }
                name = "serve" if replicas == 1 else f"serve-{number + 1}"
                self.replicas.append(Process(name, [str(binary), "serve"], env, self.log_dir))
            for process, url in zip(self.replicas, self.urls):
                wait_until(f"{process.name} is ready", lambda: answers(url, "/readyz"), 30, every=0.005)
            if self.replicas:
                self.serve, self.url = self.replicas[0], self.urls[0]
                self.startup_seconds = time.monotonic() - self.serve.started_at
        except BaseException:
            self.close()
            raise

    def provider_stats(self) -> dict[str, Any]:
        status, stats = Http(self.provider_url).request("GET", "/stats")
        if status != 200:
            raise StackError(f"the stand-in provider's /stats answered {status}")
        return stats

    def receiver_stats(self) -> dict[str, Any]:
        """What load/status_receiver.py got: `received`, `distinct` and `by_type`."""
        status, stats = Http(self.receiver_url).request("GET", "/stats")
        if status != 200:
            raise StackError(f"the status receiver's /stats answered {status}")
        return stats

    def print_logs(self) -> None:
        """The end of each process's log, on stderr: what a failed run shows."""
        for process in (*self.replicas, self.provider, self.receiver):
            if process is not None:
                print(f"---- {process.name} log ({process.log_path}) ----\n{process.tail()}", file=sys.stderr)

    def close(self) -> dict[str, int]:
        """Stops everything; returns the exit codes."""
        codes = {}
        for process in (*self.replicas, self.provider, self.receiver):
            if process is not None:
                codes[process.name] = process.stop()
        self.database.drop()
        return codes


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "memory": f"{memory_kb / 1024 / 1024:.0f} GiB",
        "kernel": platform.release(),
        "postgres": psql(ADMIN_URL, "SHOW server_version").split()[0],
        "commit": commit.stdout.strip() or "unknown",
    }


STATEMENTS = ROOT / "src" / "store"


def statement(path: str) -> str:
    """A statement the service runs, as its file under src/store/ holds it (`postgres/claim_due.sql`,
    `list/next_page.sql`...: the service compiles those same files in), without whole-line `--` comments."""
    file = STATEMENTS / path
    if not file.is_file():
        raise StackError(f"no {file.relative_to(ROOT)}: keep load/ in step with src/store/")
    return "\n".join(line for line in file.read_text().splitlines() if not line.lstrip().startswith("--"))


def bind(sql: str, values: dict[int, str]) -> str:
    """`sql` on one line with each `$n` replaced by the expression `values[n]`: a literal, or a pgbench
    variable such as `:ids`. Highest n first, so that `$1` never eats the start of `$10`; a `$n` left
    unbound is an error rather than a statement that fails later."""
    for number in sorted(values, reverse=True):
        sql = sql.replace(f"${number}", values[number])
    if re.search(r"\$\d", sql):
        raise StackError(f"a parameter was left unbound: {sql}")
    return " ".join(sql.split())


def find_binary(explicit: str | None) -> Path:
    binary = Path(explicit) if explicit else ROOT / "target" / "release" / "insider-messaging"
    if not binary.is_file():
        raise StackError(f"no binary at {binary}: run `cargo build --release` (make bench does)")
    return binary


OHA_VERSION = "1.16.0"


def oha_binary() -> str:
    """oha from PATH or ~/.cargo/bin, installed from crates.io when missing (about 8 minutes on 2 cores)."""
    for candidate in (shutil.which("oha"), str(Path.home() / ".cargo" / "bin" / "oha")):
        if candidate and Path(candidate).is_file():
            return candidate
    print(f"installing oha {OHA_VERSION} from crates.io (once; about 8 minutes on 2 cores)", flush=True)
    subprocess.run(["cargo", "install", "oha", "--version", OHA_VERSION, "--locked"], check=True)
    return str(Path.home() / ".cargo" / "bin" / "oha")


def oha(url: str, seconds: float, rate: float | None = None, connections: int = 8, method: str = "GET",
        body: str | None = None, random_url: bool = False, api_key: str | None = None) -> dict[str, Any]:
    """Drives `url` with oha for `seconds` (at `rate` requests/s, or as fast as `connections` allow) and
    returns what a reader wants of it: rate, latency percentiles in ms, statuses, errors."""
    # -w: requests still open when the time is up are waited for, not counted as errors.
    argv = [oha_binary(), "-z", f"{seconds}s", "-w", "-c", str(connections), "--no-tui", "--output-format", "json",
            "-m", method, *(["-H", f"X-API-Key: {api_key}"] if api_key else [])]
    if rate is not None:
        argv += ["-q", str(rate), "--latency-correction"]
    if body is not None:
        argv += ["-d", body, "-T", "application/json"]
    if random_url:
        argv.append("--rand-regex-url")
    done = subprocess.run([*argv, url], capture_output=True, text=True)
    if done.returncode != 0:
        raise StackError(f"oha failed: {done.stderr.strip()[:500]}")
    report = json.loads(done.stdout)
    statuses = {int(code): count for code, count in report["statusCodeDistribution"].items()}
    percentiles = report["latencyPercentiles"]
    ms = lambda key: (percentiles.get(key) or 0) * 1000  # noqa: E731
    return {
        "requests": sum(statuses.values()) + sum(report["errorDistribution"].values()),
        "rate": report["summary"]["requestsPerSec"],
        "p50_ms": ms("p50"),
        "p90_ms": ms("p90"),
        "p99_ms": ms("p99"),
        "max_ms": (report["summary"]["slowest"] or 0) * 1000,
        "statuses": statuses,
        "errors": sum(count for code, count in statuses.items() if code >= 400)
        + sum(report["errorDistribution"].values()),
        "error_kinds": report["errorDistribution"],
    }
