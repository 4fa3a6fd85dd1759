"""The faults, one function each, as hardbyte/postgresql-job-queue-benchmarking runs them against every
queue it compares (its bench_harness/hooks.py), shortened where this machine needs it.

Each takes the cell's `Stand` (what runs) and the fault's length, injects the fault, holds it, removes it,
and returns when it began and ended (epoch seconds) with notes on what it did. `Stand.hold(start, seconds,
probe)` sleeps to the end of the fault; with `probe` it profiles the claim near its start and end.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from clients import Session, close_connections, fill_connections

Notes = dict[str, object]


def restart(stand, seconds: float) -> tuple[float, float, Notes]:
    """Postgres stopped (fast shutdown) and started again `seconds` later. The benchmark keeps it down for
    half its phase; the fault ends when the server takes connections again."""
    start = time.time()
    stand.postgres.stop()
    time.sleep(max(0.0, start + seconds - time.time()))
    stand.postgres.start()
    return start, time.time(), {"down_s": round(time.time() - start, 1)}


def backend_kill(stand, seconds: float) -> tuple[float, float, Notes]:
    """Every 0.5 s, pg_terminate_backend on each backend of the run's database that is active or idle in a
    transaction (the benchmark's filter), sparing the harness's own sessions."""
    killer = Session(stand.postgres.admin_url, "killer")
    kills, rounds = 0, 0
    terminate = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        f" WHERE datname = '{stand.database.name}' AND pid <> pg_backend_pid()"
        " AND state IN ('active', 'idle in transaction') AND application_name NOT LIKE 'faults-%'"
    )
    start = time.time()
    try:
        while time.time() < start + seconds:
            kills += int(killer.run(terminate) or 0)
            rounds += 1
            time.sleep(max(0.0, start + rounds * 0.5 - time.time()))
    finally:
        killer.close()
    return start, time.time(), {"backends_terminated": kills, "rounds": rounds}


def connections(stand, seconds: float) -> tuple[float, float, Notes]:
    """Idle connections to the run's database until Postgres refuses one (the benchmark asks for 300 of
    a server allowing 100), held for `seconds`; the service keeps only what its pool already had."""
    start = time.time()
    held, refusal = fill_connections(stand.postgres.port, stand.database.name)
    try:
        stand.hold(start, seconds, probe=False)
    finally:
        close_connections(held)
    return start, time.time(), {"connections_held": len(held), "refused_with": refusal}


def idle_xact(stand, seconds: float) -> tuple[float, float, Notes]:
    """`BEGIN; SELECT txid_current();` then idle for `seconds`: the transaction holds an xid, so no row
    that died after it began can be vacuumed anywhere in the cluster."""
    holder = Session(stand.database.url, "idle-xact")
    start = time.time()
    try:
        xid = holder.run("BEGIN; SELECT txid_current()")
        pinned = stand.monitor.run(
            "SELECT state || ' xid=' || backend_xid FROM pg_stat_activity WHERE application_name = 'faults-idle-xact'"
        )
        stand.hold(start, seconds, probe=True)
        horizon = stand.monitor.run("SELECT count(*) FROM pg_stat_activity WHERE backend_xid IS NOT NULL"
                                    " AND application_name = 'faults-idle-xact'")
        holder.run("ROLLBACK")
    finally:
        holder.close()
    return start, time.time(), {"xid": xid, "holder": pinned, "still_pinned_at_end": horizon == "1"}


READERS = 4
READER_PAUSE_S = 0.1


def rr_readers(stand, seconds: float) -> tuple[float, float, Notes]:
    """Four connections, each in one REPEATABLE READ transaction for the whole fault, running
    `SELECT count(*) FROM messages` and pausing 0.1 s between scans, as the benchmark's active readers
    do over a queue's hot table: analytics on the OLTP path. Each snapshot pins the horizon too."""
    stop = threading.Event()
    scans = [0] * READERS
    errors: list[str] = []

    def read(index: int) -> None:
        session = Session(stand.database.url, f"reader-{index}")
        try:
            session.run("BEGIN ISOLATION LEVEL REPEATABLE READ")
            while not stop.is_set():
                try:
                    session.run("SELECT count(*) FROM messages")
                    scans[index] += 1
                except Exception as error:  # noqa: BLE001 - the benchmark's readers carry on too
                    errors.append(str(error))
                    if len(errors) > 100:
                        return
                stop.wait(READER_PAUSE_S)
            session.run("ROLLBACK")
        finally:
            session.close()

    start = time.time()
    readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(READERS)]
    for reader in readers:
        reader.start()
    try:
        stand.hold(start, seconds, probe=True)
    finally:
        stop.set()
        for reader in readers:
            reader.join(30)
    return start, time.time(), {"scans": sum(scans), "reader_errors": len(errors), "first_error": errors[:1]}


def redis_down(stand, seconds: float) -> tuple[float, float, Notes]:
    """Redis stopped for `seconds`, then started again empty on the same port."""
    start = time.time()
    stand.redis.stop()
    time.sleep(max(0.0, start + seconds - time.time()))
    stand.redis.start()
    return start, time.time(), {}


KILLS = 5


def sigkill(stand, seconds: float) -> tuple[float, float, Notes]:
    """`serve` SIGKILLed five times, evenly over `seconds`, and started again at once each time. Its claims
    in flight stay `sending` until their lease ends and the rescuer hands them back."""
    start = time.time()
    restarts = []
    for kill in range(KILLS):
        time.sleep(max(0.0, start + (kill + 0.5) * seconds / KILLS - time.time()))
        restarts.append(round(stand.service.kill_and_restart(), 2))
    stand.hold(start, seconds, probe=False)
    return start, time.time(), {"kills": KILLS, "ready_again_s": restarts}


HIGH_LOAD = 1.5


def high_load(stand, seconds: float) -> tuple[float, float, Notes]:
    """1.5 times the offered rate for `seconds` (not in the default set: the issue found nothing there)."""
    start = time.time()
    base = stand.producer.rate
    stand.producer.rate = base * HIGH_LOAD
    try:
        stand.hold(start, seconds, probe=False)
    finally:
        stand.producer.rate = base
    return start, time.time(), {"rate": base * HIGH_LOAD}


Cell = Callable[..., tuple[float, float, Notes]]

# name: (fault, default seconds, in the default set, what it is in a few words)
CELLS: dict[str, tuple[Cell, float, bool, str]] = {
    "restart": (restart, 10, True, "Postgres stopped, started again after the fault's seconds"),
    "backend-kill": (backend_kill, 60, True, "the service's busy backends terminated every 0.5 s"),
    "connections": (connections, 60, True, "idle connections filling max_connections"),
    "idle-xact": (idle_xact, 240, True, "a transaction holding an xid, idle: xmin pinned cluster-wide"),
    "rr-readers": (rr_readers, 240, True, "four REPEATABLE READ readers scanning messages"),
    "redis-down": (redis_down, 60, True, "Redis stopped"),
    "sigkill": (sigkill, 120, True, "serve SIGKILLed 5 times and started again"),
    "high-load": (high_load, 60, False, "1.5x the offered rate"),
}
