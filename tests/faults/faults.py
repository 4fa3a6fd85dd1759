#!/usr/bin/env python3
"""`make faults`: what the database faults of a Postgres queue benchmark do to insider-messaging's
throughput and latency while they last, and how fast it comes back.

The faults are those hardbyte/postgresql-job-queue-benchmarking runs against every queue it compares
(cells.py says how each is done):

  restart       Postgres stopped (fast) and started again 10 s later
  backend-kill  the run database's active backends terminated every 0.5 s for 60 s
  connections   idle connections filling max_connections (100) for 60 s
  idle-xact     BEGIN; SELECT txid_current(); then idle for 4 minutes: xmin pinned cluster-wide
  rr-readers    four REPEATABLE READ transactions scanning `messages` (count(*), every 0.1 s) for 4 minutes
  redis-down    Redis stopped for 60 s
  sigkill       `serve` SIGKILLed 5 times in 2 minutes, started again at once each time
  high-load     1.5x the offered rate for 60 s (only with --cells)

Isolation: every cell runs against a Postgres cluster and a Redis of the run's OWN, never the shared ones
on 5432 and 6379 that other test runs use (restarting, filling or stopping those would break them). The
cluster is made with Debian's pg_createcluster (trust auth on 127.0.0.1, a free port, the main cluster's
settings: max_connections 100, shared_buffers 128MB, fsync on; autovacuum ON, which the shared cluster of
this machine turns off, see --autovacuum) and dropped with pg_dropcluster at the end; Redis is a child
`redis-server` on a free port keeping nothing on disk. Both go on Ctrl-C or a failure too, and a cluster
left by a run that was killed outright is dropped by the next run. Needs root (pg_createcluster), psql
and redis-server.

Each cell gets a fresh database and a fresh `insider-messaging serve` (INTERVAL=5ms BATCH_SIZE=500
WEBHOOK_CONCURRENCY=32, the run's Redis) on the stand-in provider (`mock-provider --latency 1ms`), and a
producer offering --rate messages/s through POST /messages/batch (a batch every 100 ms, open loop). Then:
warm-up (until the service keeps up), a steady baseline, the fault, a recovery window under the same load, the producer stops, and a
final drain. Per cell it prints and records:

  lost            enqueued ids (every id POST /messages/batch handed out) that did not end `sent`, with any
                  row left `pending`/`sending` after the drain: must be 0
  POSTed twice    keys the stand-in saw more than once, and of those accepted twice (its GET /stats)
  during fault    messages sent per second during the fault, as a share of the baseline's
  longest gap     the longest time with no send from the fault's start to the end of the load
  back to 90%     seconds after the fault ended until a 2 s window sends 90% of the offered rate
  backlog         enqueued but not yet sent at the fault's end, its peak, and the seconds until it is back
                  to the baseline's largest ("after load": only once the producer had stopped)
  p99             enqueue to 202, of the messages enqueued before, during and after the fault
  claim mean      the claim's mean time per pg_stat_statements before, during and after the fault
  busiest         the three statements that took the most database time during and after the fault
During idle-xact and rr-readers it also takes EXPLAIN (ANALYZE, BUFFERS) of the service's claim (read
from the source, figures.claim_statement) in a rolled-back transaction before the fault, near its start,
near its end and after the recovery window.

The figures come from the database rows afterwards (figures.py), good to 0.1 s. Results are written to
target/faults/faults-<time>.json with the full plans. Exit 1 if any cell lost a message (with --ci, also
if a cell did not recover within its window).

Usage:
  python3 tests/faults/faults.py                       # every default cell, release binary (~25 minutes)
  python3 tests/faults/faults.py --cells idle-xact --fault-seconds 120 --binary target/debug/insider-messaging
  python3 tests/faults/faults.py --ci                  # restart and backend-kill, short (under 2 minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "load"))

from cells import CELLS  # noqa: E402
from clients import Producer, Session  # noqa: E402
from figures import (  # noqa: E402
    Marks,
    busiest,
    claim_stats,
    describe_plan,
    explain_claim,
    latency_figures,
    losses,
    mean_ms,
    plan_summary,
    statement_totals,
    throughput_figures,
)
from servers import PrivatePostgres, PrivateRedis  # noqa: E402
from stack import (  # noqa: E402
    ROOT,
    Database,
    Http,
    Process,
    StackError,
    answers,
    find_binary,
    free_port,
    machine,
    wait_until,
)

SERVE_SETTINGS = {"INTERVAL": "5ms", "BATCH_SIZE": "500", "WEBHOOK_CONCURRENCY": "32"}
PROGRESS_EVERY_S = 5
CI_FAULT_SECONDS = {"restart": 5, "backend-kill": 20}


class Service:
    """`insider-messaging serve` on the cell's database, restartable on the same port."""

    def __init__(self, binary: Path, env: dict[str, str], log_dir: Path):
        self.binary = binary
        self.log_dir = log_dir
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.env = {"PATH": os.environ.get("PATH", ""), "HTTP_ADDR": f"127.0.0.1:{port}", "RUST_LOG": "warn", **env}
        self.starts = 0
        self.process: Process | None = None
        self.start()

    def start(self) -> float:
        """Starts it and returns the seconds until it answered /readyz."""
        self.starts += 1
        self.process = Process(f"serve-{self.starts}", [str(self.binary), "serve"], self.env, self.log_dir)
        return wait_until("serve is ready", lambda: answers(self.url, "/readyz"), 30, every=0.01)

    def kill_and_restart(self) -> float:
        self.process.popen.send_signal(signal.SIGKILL)
        self.process.popen.wait()
        self.process.stop()
        return self.start()

    def stop(self) -> int:
        return self.process.stop() if self.process else -1


class Stand:
    """What runs during one cell, as the faults see it."""

    def __init__(self, postgres: PrivatePostgres, redis: PrivateRedis, database: Database, service: Service,
                 producer: Producer, monitor: Session, claim_limit: int):
        self.postgres = postgres
        self.redis = redis
        self.database = database
        self.service = service
        self.producer = producer
        self.monitor = monitor
        self.claim_limit = claim_limit
        self.plans: list[dict[str, object]] = []

    def hold(self, start: float, seconds: float, probe: bool) -> None:
        """Sleeps until `start + seconds`; with `probe`, profiles the claim near the start and the end."""
        if probe:
            sleep_until(start + min(5.0, seconds / 4))
            self.profile_claim("fault start")
            sleep_until(start + max(seconds - 10.0, seconds * 3 / 4))
            self.profile_claim("fault near end")
        sleep_until(start + seconds)

    def profile_claim(self, when: str) -> None:
        for sweep in (False, True):
            plan = explain_claim(self.monitor.run_reconnecting, self.claim_limit, sweep)
            summary = plan_summary(plan)
            kind = "sweep" if sweep else "claim"
            self.plans.append({"when": when, "kind": kind, "at": time.time(), "summary": summary, "plan": plan})
            print(f"    {kind} at {when}: {describe_plan(summary)}", flush=True)


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


class Progress:
    """A line every few seconds: offered and enqueued per second, what the provider accepted, the backlog."""

    def __init__(self, cell: str, producer: Producer, provider_url: str):
        self.cell, self.producer, self.provider_url = cell, producer, provider_url
        self.phase = "warm-up"
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _accepted(self) -> int | None:
        client = Http(self.provider_url, timeout=2)
        try:
            status, stats = client.request("GET", "/stats")
            return stats["accepted"] - stats["duplicates"] if status == 200 else None
        except (OSError, ValueError):
            return None
        finally:
            client.close()

    def _run(self) -> None:
        last_counts, last_accepted = self.producer.counts(), self._accepted() or 0
        while not self._stop.wait(PROGRESS_EVERY_S):
            counts, accepted = self.producer.counts(), self._accepted()
            if accepted is None:
                continue
            per_s = {k: (counts[k] - last_counts[k]) / PROGRESS_EVERY_S for k in counts}
            print(
                f"  {self.cell:<12} {time.time() - self.started:5.0f}s {self.phase:<9} offered {per_s['offered']:5.0f}/s"
                f" enqueued {per_s['enqueued']:5.0f}/s sent {(accepted - last_accepted) / PROGRESS_EVERY_S:5.0f}/s"
                f" failed {per_s['failed']:4.0f}/s skipped {per_s['skipped']:4.0f}/s"
                f" backlog ~{counts['enqueued'] - accepted:,}",
                flush=True,
            )
            last_counts, last_accepted = counts, accepted

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def warm_up(producer: Producer, provider_url: str, args: argparse.Namespace) -> float:
    """Load for at least --warmup seconds and until the service keeps up (the backlog under half a second
    of the offer for three seconds running), so that the baseline is steady; at most --warmup-max seconds.
    A fresh service on a busy machine can take a while to catch up with its first seconds."""
    started = time.monotonic()
    caught_up = 0
    while time.monotonic() - started < args.warmup_max:
        time.sleep(1)
        stats = provider_stats(provider_url)
        backlog = producer.counts()["enqueued"] - (stats["accepted"] - stats["duplicates"])
        caught_up = caught_up + 1 if backlog <= args.rate / 2 else 0
        if caught_up >= 3 and time.monotonic() - started >= args.warmup:
            break
    else:
        print(f"  the service did not keep up within {args.warmup_max:g} s of warm-up; measuring anyway", flush=True)
    return time.monotonic() - started


def provider_stats(url: str) -> dict[str, object]:
    client = Http(url)
    try:
        status, stats = client.request("GET", "/stats")
    finally:
        client.close()
    if status != 200:
        raise StackError(f"the stand-in provider's /stats answered {status}")
    return stats


def drain(database: Database, timeout: float) -> float:
    """Waits until no row is `pending` or `sending`; returns the seconds it took (or `timeout`)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if database.scalar("SELECT count(*) FROM messages WHERE status IN ('pending', 'sending')") == 0:
            break
        time.sleep(0.5)
    return time.monotonic() - started


def run_cell(name: str, seconds: float, args: argparse.Namespace, binary: Path, postgres: PrivatePostgres,
             redis: PrivateRedis, log_dir: Path) -> dict[str, object]:
    fault, _, _, what = CELLS[name]
    cell_logs = log_dir / name
    cell_logs.mkdir()
    database = Database(binary, postgres.admin_url)
    database.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    provider = service = producer = progress = monitor = None
    result: dict[str, object] = {"cell": name, "fault_seconds": seconds}
    try:
        provider_port = free_port()
        provider_url = f"http://127.0.0.1:{provider_port}"
        provider = Process("provider", [str(binary), "mock-provider", "--addr", f"127.0.0.1:{provider_port}",
                                        "--latency", args.provider_latency],
                           {**os.environ, "RUST_LOG": "warn"}, cell_logs)
        wait_until("the stand-in provider answers", lambda: answers(provider_url, "/stats"), 10)
        service = Service(binary, {**SERVE_SETTINGS, "DATABASE_URL": database.url, "REDIS_URL": redis.url,
                                   "WEBHOOK_URL": f"{provider_url}/hook", "AUTOSTART": "true"}, cell_logs)
        monitor = Session(database.url, "monitor")
        producer = Producer(service.url, args.rate, f"faults {name}")
        stand = Stand(postgres, redis, database, service, producer, monitor,
                      int(SERVE_SETTINGS["WEBHOOK_CONCURRENCY"]))
        probe = name in ("idle-xact", "rr-readers")

        print(f"\n== {name}: {what}, {seconds:g} s", flush=True)
        producer.start()
        progress = Progress(name, producer, provider_url)
        result["warmup_s"] = warm_up(producer, provider_url, args)
        progress.phase = "baseline"
        baseline_start = time.time()
        stats_before = claim_stats(monitor.run_reconnecting)
        time.sleep(args.baseline_seconds)
        if probe:
            stand.profile_claim("before")
        stats_fault = claim_stats(monitor.run_reconnecting)
        totals_fault = statement_totals(monitor.run_reconnecting)
        progress.phase = "fault"
        fault_start, fault_end, notes = fault(stand, seconds)
        stats_after = claim_stats(monitor.run_reconnecting)
        totals_after = statement_totals(monitor.run_reconnecting)
        progress.phase = "recovery"
        sleep_until(fault_end + args.recovery_seconds)
        load_end = time.time()
        stats_end = claim_stats(monitor.run_reconnecting)
        totals_end = statement_totals(monitor.run_reconnecting)
        if probe:
            stand.profile_claim("after recovery window")
        producer.stop()
        progress.phase = "drain"
        drained_in = drain(database, args.drain_timeout)
        progress.stop()

        marks = Marks(baseline_start, fault_start, fault_end, load_end)
        stats = provider_stats(provider_url)
        result.update(
            notes=notes,
            marks=vars(marks),
            offered_rate=args.rate,
            posts=producer.counts(),
            post_failures=dict(producer.failed),
            final_drain_s=drained_in,
            keys_posted_twice=stats["keys_posted_more_than_once"],
            accepted_twice=stats["duplicates"],
            accepted_keys=stats["accepted"] - stats["duplicates"],
            claim_mean_ms={
                "before": mean_ms(stats_before, stats_fault),
                "during": mean_ms(stats_fault, stats_after),
                "after": mean_ms(stats_after, stats_end),
            },
            plans=stand.plans,
            busiest_statements={"during": busiest(totals_fault, totals_after),
                                "after": busiest(totals_after, totals_end)},
            **losses(database, producer.ids),
            **throughput_figures(database, marks, args.rate),
            **latency_figures(database, marks),
        )
    except BaseException:
        if service and service.process:
            print(f"---- serve log ({service.process.log_path}) ----\n{service.process.tail()}", file=sys.stderr)
        raise
    finally:
        if progress:
            progress.stop()
        if producer:
            producer.stop()
        if monitor:
            monitor.close()
        if service:
            result["serve_exit"] = service.stop()
        if provider:
            provider.stop()
        database.drop()
    print(summary_line(result), flush=True)
    return result


def fmt(value: object, pattern: str = "{:.1f}", none: str = "-") -> str:
    return none if value is None else pattern.format(value)


def summary_line(r: dict[str, object]) -> str:
    return (
        f"  => lost {r['lost']} (left {r['not_sent'] or 'none'}), POSTed twice {r['keys_posted_twice']}"
        f" (accepted twice {r['accepted_twice']}); POSTs failed {r['post_failures'] or 'none'},"
        f" skipped {r['posts']['skipped']}; during the fault {fmt(r['fault_share'], '{:.0%}')}"
        f" of the steady {r['baseline_rate']:.0f}/s; longest gap {r['longest_gap_s']:.1f} s; back to 90%"
        f" {fmt(r['back_to_90_s'], '{:.1f} s', 'not within the window')}; backlog {r['backlog_at_fault_end']:,}"
        f" at the end, peak {r['peak_backlog']:,}, drained {drained(r)}; p99 {fmt(r['p99_baseline_s'], '{:.2f}')}"
        f" / {fmt(r['p99_fault_s'], '{:.2f}')} / {fmt(r['p99_after_s'], '{:.2f}')} s; notes {r['notes']}"
    )


def drained(r: dict[str, object]) -> str:
    if r["drain_s"] is None:
        return "never"
    return f"{r['drain_s']:.1f} s" + (" (after load)" if r["drained_after_load"] else "")


def table(results: list[dict[str, object]]) -> str:
    lines = [
        "| cell | fault (s) | lost | keys POSTed twice (accepted twice) | messages whose POST failed |"
        " steady sends/s | sends during fault, share of steady | longest gap (s) | back to 90% (s) |"
        " backlog at end / peak | backlog drained (s) | p99 enqueue→sent (s) before / during / after |"
        " claim mean (ms) before / during / after |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['cell']} | could not run: {r['error']} |")
            continue
        claim = r["claim_mean_ms"]
        lines.append(
            f"| {r['cell']} | {r['fault_seconds']:g} | {r['lost']} | {r['keys_posted_twice']} ({r['accepted_twice']}) |"
            f" {r['posts']['failed'] + r['posts']['skipped']:,} | {r['baseline_rate']:.0f} |"
            f" {fmt(r['fault_share'], '{:.0%}')} | {r['longest_gap_s']:.1f} |"
            f" {fmt(r['back_to_90_s'], '{:.1f}', 'not in window')} |"
            f" {r['backlog_at_fault_end']:,} / {r['peak_backlog']:,} | {drained(r)} |"
            f" {fmt(r['p99_baseline_s'], '{:.2f}')} / {fmt(r['p99_fault_s'], '{:.2f}')} / {fmt(r['p99_after_s'], '{:.2f}')} |"
            f" {fmt(claim['before'], '{:.2f}')} / {fmt(claim['during'], '{:.2f}')} / {fmt(claim['after'], '{:.2f}')} |"
        )
    return "\n".join(lines)


def busiest_text(results: list[dict[str, object]]) -> str:
    """Where the database's time went during and after each fault (pg_stat_statements)."""
    out = []
    for r in results:
        for window, statements in r.get("busiest_statements", {}).items():
            for s in statements:
                out.append(f"{r['cell']:<12} {window:<6} {s['total_ms'] / 1000:8.1f} s {s['calls']:>8} calls"
                           f" {s['mean_ms']:8.2f} ms  {s['statement'][:110]}")
    return "\n".join(out)


def plans_text(results: list[dict[str, object]]) -> str:
    out = []
    for r in results:
        for plan in r.get("plans", []):
            out.append(f"-- {r['cell']}, {plan['when']}: {describe_plan(plan['summary'])}\n{plan['plan']}\n")
    return "\n".join(out)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", help="insider-messaging to run (default target/release/insider-messaging)")
    parser.add_argument("--cells", help=f"comma-separated, of {', '.join(CELLS)} (default: all but high-load)")
    parser.add_argument("--fault-seconds", type=float, help="length of every fault (default: each cell's own)")
    parser.add_argument("--rate", type=float, default=800, help="messages/s offered (default 800)")
    parser.add_argument("--provider-latency", default="1ms", help="the stand-in's latency (default 1ms)")
    parser.add_argument("--warmup", type=float, default=10,
                        help="least seconds of load before the baseline (default 10); it goes on until the "
                             "service keeps up, for at most --warmup-max (default 90)")
    parser.add_argument("--warmup-max", type=float, default=90, help="most seconds of warm-up (default 90)")
    parser.add_argument("--baseline-seconds", type=float, default=20, help="steady window before the fault (20)")
    parser.add_argument("--recovery-seconds", type=float, default=60, help="load after the fault (default 60)")
    parser.add_argument("--drain-timeout", type=float, default=300,
                        help="seconds the final drain may take before what is left counts as lost (300)")
    parser.add_argument("--autovacuum", choices=["on", "off"], default="on",
                        help="the run cluster's autovacuum (default on; the shared cluster here runs off)")
    parser.add_argument("--ci", action="store_true",
                        help="the short form for CI: restart and backend-kill at 400/s, ~2 minutes, and fail "
                             "unless each recovers within its window")
    args = parser.parse_args()
    if args.ci:
        args.cells = args.cells or ",".join(CI_FAULT_SECONDS)
        args.rate, args.warmup, args.baseline_seconds, args.recovery_seconds = 400, 3, 10, 15
        args.warmup_max = 30
        args.drain_timeout = 90
    names = args.cells.split(",") if args.cells else [n for n, (_, _, default, _) in CELLS.items() if default]
    unknown = [n for n in names if n not in CELLS]
    if unknown:
        parser.error(f"unknown cell(s) {', '.join(unknown)}; known: {', '.join(CELLS)}")
    args.cell_names = names
    return args


def fault_seconds(name: str, args: argparse.Namespace) -> float:
    if args.fault_seconds is not None:
        return args.fault_seconds
    if args.ci and name in CI_FAULT_SECONDS:
        return CI_FAULT_SECONDS[name]
    return CELLS[name][1]


def main() -> int:
    args = parse_args()
    # Ctrl-C and SIGTERM end the run through the cleanup below (even where SIGINT came in ignored, as in a
    # background job of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log_dir = Path(tempfile.mkdtemp(prefix="insider-faults-"))
    postgres = redis = None
    results: list[dict[str, object]] = []
    try:
        binary = find_binary(args.binary)
        print(f"insider-messaging faults: cells {', '.join(args.cell_names)}; {args.rate:g} msgs/s offered,"
              f" provider {args.provider_latency}, {' '.join(f'{k}={v}' for k, v in SERVE_SETTINGS.items())};"
              f" logs in {log_dir}", flush=True)
        postgres = PrivatePostgres(args.autovacuum == "on", log_dir)
        redis = PrivateRedis(log_dir)
        about = {**machine(), "postgres": postgres.server_version(), "autovacuum": args.autovacuum,
                 "date": time.strftime("%Y-%m-%d %H:%M %Z")}
        print(f"machine: {about['cpu']}, {about['cores']} cores, PostgreSQL {about['postgres']} (own cluster"
              f" {postgres.version}/{postgres.name} on port {postgres.port}, autovacuum {args.autovacuum}),"
              f" Redis on {redis.port}; commit {about['commit']}", flush=True)
        for name in args.cell_names:
            try:
                results.append(run_cell(name, fault_seconds(name, args), args, binary, postgres, redis, log_dir))
            except StackError as error:
                # One cell that could not run does not cost the others their figures.
                print(f"  => {name} could not run: {error}", file=sys.stderr, flush=True)
                results.append({"cell": name, "error": str(error)})
    except StackError as error:
        print(f"faults failed: {error} (logs in {log_dir})", file=sys.stderr)
        return 1
    finally:
        if redis:
            redis.close()
        if postgres:
            postgres.drop()
    print()
    print(table(results))
    out = ROOT / "target" / "faults"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"faults-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"machine": about, "args": {k: v for k, v in vars(args).items()}, "cells": results},
                               indent=2, default=str) + "\n")
    busy = busiest_text(results)
    if busy:
        print("\nbusiest statements (database time) during and after each fault:\n" + busy)
    if any(r.get("plans") for r in results):
        print("\n" + plans_text(results))
    print(f"\nwritten to {path.relative_to(ROOT)}")
    problems = [f"{r['cell']} could not run" for r in results if "error" in r]
    measured = [r for r in results if "error" not in r]
    problems += [f"{r['cell']} lost {r['lost']} and left {r['not_sent']}" for r in measured if r["lost"] or r["not_sent"]]
    # The rows say sent; the stand-in says what it took. A row sent without a 202 behind it is a loss the
    # rows alone would not show.
    problems += [f"{r['cell']}: {r['sent']} messages recorded sent, {r['accepted_keys']} accepted by the provider"
                 for r in measured if r["sent"] > r["accepted_keys"]]
    # Only a process killed mid-send may post a message again (same key, which the provider drops).
    problems += [f"{r['cell']}: {r['accepted_twice']} messages accepted twice"
                 for r in measured if r["accepted_twice"] and r["cell"] != "sigkill"]
    if args.ci:
        problems += [f"{r['cell']} was not back to 90% within {args.recovery_seconds:g} s"
                     for r in measured if r["back_to_90_s"] is None]
    if problems:
        print("faults: FAILED: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
