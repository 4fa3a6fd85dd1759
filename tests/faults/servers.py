"""The run's own Postgres cluster and Redis.

Other test runs share the machine's Postgres (5432) and Redis (6379). A fault run restarts its database,
fills every connection slot and stops Redis, so it brings up servers of its own on free ports and removes
them when it ends, whatever way it ends. A cluster left behind by a run that was killed outright is
dropped by the next run (its name carries the pid of the run that made it).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "load"))
from stack import Process, StackError, free_port, psql, wait_until  # noqa: E402

CLUSTER_PREFIX = "faults_"

# The main cluster's settings (Debian's defaults plus what /etc/postgresql/*/main sets), so that figures
# compare with the rest of the project's measurements. autovacuum is the exception: see `cluster_settings`.
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "100",
    "shared_buffers": "'128MB'",
    "fsync": "on",
    "max_wal_size": "'1GB'",
    "min_wal_size": "'80MB'",
    # The claim's mean time during a fault; costs a few microseconds a statement.
    "shared_preload_libraries": "'pg_stat_statements'",
}


def cluster_settings(autovacuum: bool) -> str:
    """postgresql.conf lines for the run's cluster. The shared cluster of this machine turns autovacuum
    off (its conf.d/90-ci.conf, for test speed); a production database runs it, and the service's
    migrations tune it for the queue table, so it is on unless the run asks for the shared cluster's
    behaviour."""
    settings = {**SETTINGS, "autovacuum": "on" if autovacuum else "off"}
    return "".join(f"{name} = {value}\n" for name, value in settings.items())


def run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise StackError(f"{' '.join(argv[:4])} failed: {(done.stderr or done.stdout).strip()[-800:]}")
    return done.stdout


def installed_version() -> str:
    """The newest Postgres major version installed (Debian keeps each under /usr/lib/postgresql)."""
    versions = [p.name for p in Path("/usr/lib/postgresql").iterdir() if p.name.isdigit()]
    if not versions or not shutil.which("pg_createcluster"):
        raise StackError("no Postgres server with Debian's pg_createcluster here (apt-get install postgresql)")
    return max(versions, key=int)


def run_is_alive(pid: int) -> bool:
    try:
        return "faults" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


def drop_stale_clusters() -> None:
    """Drops the clusters of earlier runs that died before they could clean up."""
    listing = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        version, name = fields[0], fields[1]
        stale = re.fullmatch(rf"{CLUSTER_PREFIX}(\d+)", name)
        if stale and int(stale.group(1)) != os.getpid() and not run_is_alive(int(stale.group(1))):
            print(f"dropping cluster {version}/{name}, left by a run that died", flush=True)
            subprocess.run(["pg_dropcluster", "--stop", version, name], capture_output=True)


class PrivatePostgres:
    """A Postgres cluster of the run's own: trust auth on 127.0.0.1, a free port, dropped by `drop()`."""

    def __init__(self, autovacuum: bool, log_dir: Path):
        drop_stale_clusters()
        self.version = installed_version()
        self.name = f"{CLUSTER_PREFIX}{os.getpid()}"
        self.port = free_port()
        self.log_dir = log_dir
        self.admin_url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        run(["pg_createcluster", self.version, self.name, "-p", str(self.port), "--start-conf=manual",
             "--", "--auth=trust"])
        try:
            conf_d = Path(f"/etc/postgresql/{self.version}/{self.name}/conf.d")
            conf_d.mkdir(exist_ok=True)
            (conf_d / "faults.conf").write_text(cluster_settings(autovacuum))
            self.start()
        except BaseException:
            self.drop()
            raise

    def _ctl(self, *action: str) -> None:
        run(["pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, *action])

    def start(self) -> None:
        """Starts the cluster and returns once it takes connections."""
        self._ctl("start")
        wait_until("the run's Postgres takes connections", self.answers, 30, every=0.1)

    def stop(self) -> None:
        """A fast shutdown: sessions are ended, as a restart by an operator or a failover would."""
        self._ctl("stop", "-m", "fast")

    def answers(self) -> bool:
        try:
            psql(self.admin_url, "SELECT 1")
            return True
        except StackError:
            return False

    def server_version(self) -> str:
        return psql(self.admin_url, "SHOW server_version").split()[0]

    def drop(self) -> None:
        """Stops and removes the cluster; its log is kept with the run's other logs."""
        log = Path(f"/var/log/postgresql/postgresql-{self.version}-{self.name}.log")
        if log.is_file():
            shutil.copy(log, self.log_dir / "postgres.log")
        subprocess.run(["pg_dropcluster", "--stop", self.version, self.name], capture_output=True)
        log.unlink(missing_ok=True)


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class PrivateRedis:
    """A Redis of the run's own on a free port, keeping nothing on disk; a child process, so that it ends
    with the run."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.log_dir = log_dir
        self.starts = 0
        self.process: Process | None = None
        self.start()

    def start(self) -> None:
        self.starts += 1
        self.process = Process(
            f"redis-{self.starts}",
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.log_dir)],
            dict(os.environ),
            self.log_dir,
        )
        wait_until("the run's Redis answers PING", lambda: redis_answers(self.port), 10)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=10)
            self.process = None
        # The port must be free again before a restart binds it.
        wait_until("the run's Redis has let go of its port", lambda: not redis_answers(self.port), 10)

    def close(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=10)
            self.process = None
