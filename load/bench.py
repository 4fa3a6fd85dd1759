#!/usr/bin/env python3
"""`make bench`: end-to-end throughput of insider-messaging on Postgres, and the database's own ceiling.

It runs scenarios (`--scenarios`, all by default), each `--runs` times (3), interleaved run by run, and
prints a table per scenario with every run and the median, then the targets of issues 12, 13 and 14
read on the medians with PASS or FAIL. The other scenarios (latency-bound, instant-64, receipts-drain,
mixed-drain, rate-limit, quota-429, receipts-ingest, backlog-pause) and the apalis baseline beside two
of them are load/bench_scenarios.py; `--no-baseline` leaves apalis out (and unbuilt). This file holds
the `drain` scenario and the ceiling.

Each run of `drain` starts a fresh Postgres database, the stand-in provider and `serve` as separate
processes (load/stack.py), then:

1. ingest: enqueues N messages through `POST /messages/batch` (1,000 a request, 4 connections) while
   sending is stopped, and times it;
2. drain: `POST /scheduler/start` with the throttle open (INTERVAL, BATCH_SIZE, WEBHOOK_CONCURRENCY
   below) and waits until every message is `sent`. messages/s = N / (the last result's commit - start);
3. latency: enqueues messages at a steady --latency-rate for --latency-seconds while sending runs, and
   takes p50/p99 of `sent_at - created_at` over them: from the enqueue to the provider's 202 in hand,
   an upper bound of the provider's receipt. (The drain's own latency is only its queueing delay.)
4. ceiling: pgbench runs the claim and the flush statements of the service (src/store/postgres/
   claim_due.sql and finish_claims.sql, the files the service compiles in, so they cannot drift), with
   no HTTP, on a fresh table of N pending rows.

The ceiling is measured once a run, before the scenarios, and read by `drain` and `instant-64`.
Everything is written as JSON under target/bench/. A run fails (exit 1) when a message is not sent or a
key is POSTed more than once (bench_scenarios.py says what it allows where the provider refuses POSTs);
a missed target does not fail it.

To compare with a build that predates `POST /messages/batch` (docs/performance.md does), `--ingest sql`
inserts the rows with one SQL statement instead, and `--latency-seconds 0` skips step 3.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import (  # noqa: E402
    ROOT,
    Database,
    Http,
    Stack,
    StackError,
    bind,
    find_binary,
    machine,
    postgres_cpu_seconds,
    statement,
    wait_until,
)
from enqueue import ingest, message  # noqa: E402
import bench_scenarios  # noqa: E402

LATENCY_BATCH_EVERY = 0.01


def paced(url: str, rate: int, seconds: float, prefix: str) -> int:
    """Enqueues `rate` messages a second for `seconds`, a small batch every 10 ms; returns how many."""
    per_batch = max(1, round(rate * LATENCY_BATCH_EVERY))
    client = Http(url)
    sent = 0
    started = time.monotonic()
    deadline = started
    while deadline - started < seconds:
        pause = deadline - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        status, _ = client.request(
            "POST", "/messages/batch", {"messages": [message(sent + i, prefix) for i in range(per_batch)]}
        )
        if status != 200:
            raise StackError(f"POST /messages/batch answered {status} during the latency phase")
        sent += per_batch
        deadline += LATENCY_BATCH_EVERY
    client.close()
    return sent


def one_run(binary: Path, args: argparse.Namespace) -> dict[str, float]:
    env = {
        "INTERVAL": args.interval,
        "BATCH_SIZE": str(args.batch_size),
        "WEBHOOK_CONCURRENCY": str(args.concurrency),
        "AUTOSTART": "false",
    }
    stack = Stack(binary, env)
    result: dict[str, float] = {"startup_ms": stack.startup_seconds * 1000}
    try:
        time.sleep(1)
        result["idle_rss_mb"] = stack.serve.rss_mb()
        n = args.messages

        if args.ingest == "api":
            result["ingest_per_s"] = n / ingest(stack.url, n, "bench")
        else:
            stack.database.sql(
                "INSERT INTO messages (phone_number, content) SELECT '+90555' || lpad(i::text, 7, '0'),"
                f" 'bench ' || i || ': Insider - Project' FROM generate_series(0, {n - 1}) i"
            )
        # What autovacuum does within a minute of a bulk load: the planner sees the table as it is.
        stack.database.sql("ANALYZE messages")

        client = Http(stack.url)
        cpu_before = stack.serve.cpu_seconds()
        provider_before, postgres_before = stack.provider.cpu_seconds(), postgres_cpu_seconds()
        started = time.time()
        status, _ = client.request("POST", "/scheduler/start")
        if status != 200:
            raise StackError(f"POST /scheduler/start answered {status}")
        wait_until("the provider has accepted every message", lambda: stack.provider_stats()["accepted"] >= n, 600, 0.1)
        wait_until(
            "every message is recorded sent",
            lambda: stack.database.scalar("SELECT count(*) FROM messages WHERE status = 'sent'") >= n,
            60,
            0.05,
        )
        last_commit = stack.database.scalar("SELECT extract(epoch FROM max(updated_at)) FROM messages")
        result["messages_per_s"] = n / (last_commit - started)
        result["drain_cpu_s"] = stack.serve.cpu_seconds() - cpu_before
        result["cpu_us_per_message"] = result["drain_cpu_s"] / n * 1e6
        result["drain_postgres_cpu_s"] = postgres_cpu_seconds() - postgres_before
        result["drain_provider_cpu_s"] = stack.provider.cpu_seconds() - provider_before
        result["drain_s"] = last_commit - started

        total = n
        if args.latency_seconds > 0:
            total += paced(stack.url, args.latency_rate, args.latency_seconds, "latency")
            wait_until(
                "the paced messages are sent",
                lambda: stack.database.scalar("SELECT count(*) FROM messages WHERE status = 'sent'") >= total,
                120,
                0.1,
            )
            p50, p99 = stack.database.sql(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM sent_at - created_at)),"
                " percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM sent_at - created_at))"
                " FROM messages WHERE content LIKE 'latency %'"
            ).split("|")
            result["latency_p50_ms"] = float(p50) * 1000
            result["latency_p99_ms"] = float(p99) * 1000

        stats = stack.provider_stats()
        result["posts"] = stats["received"]
        result["max_posts_per_key"] = stats["max_posts_per_key"]
        result["keys_posted_twice"] = stats["keys_posted_more_than_once"]
        result["duplicates"] = stats["duplicates"]
        result["peak_rss_mb"] = stack.serve.peak_rss_mb()
        result["serve_cpu_s"] = stack.serve.cpu_seconds()
        client.close()
        if stats["distinct_keys"] != total or stats["keys_posted_more_than_once"] != 0:
            raise StackError(
                f"{total} messages, {stats['distinct_keys']} keys, {stats['keys_posted_more_than_once']} posted twice"
            )
    except BaseException:
        stack.print_logs()
        raise
    finally:
        codes = stack.close()
    result["serve_exit"] = codes.get("serve", -1)
    if result["serve_exit"] != 0:
        raise StackError(f"serve exited {result['serve_exit']} on SIGTERM")
    return result


# The claim as a function of the run's database, its body the file the service runs: its data-modifying
# CTEs must stand at the top of a statement, so it cannot be nested in the aggregate pgbench needs.
CLAIM_FUNCTION = """
CREATE FUNCTION bench_claim(int8, text, float8, float8, timestamptz[], int8[], float8)
RETURNS TABLE (rate float8, paused_for float8, next_in float8, id uuid, lease_token uuid, attempts int4,
               phone_number text, content text, seq int8, next_attempt_at timestamptz, priority int4, rank int4,
               status text, timezone text, expires_at timestamptz)
LANGUAGE sql AS $claim$ {claim} $claim$
"""


def ceiling_script() -> str:
    """The claim, its rows gathered into arrays, then the flush of them all as accepted: both statements
    as the service runs them, only bound to pgbench's variables (the claim through `CLAIM_FUNCTION`)."""
    claim = (
        "SELECT array_agg(id) AS ids, array_agg(lease_token) AS tokens, array_agg(attempts) AS attempts"
        " FROM bench_claim(:batch, 'pgbench', 30, NULL, NULL, NULL, 600) WHERE id IS NOT NULL AND lease_token IS NOT NULL"
    )
    n = "ARRAY[cardinality(:ids::uuid[])]"
    random_ids = "(SELECT array_agg(gen_random_uuid()::text) FROM unnest(:ids::uuid[]))"
    flush = bind(
        statement("postgres/finish_claims.sql"),
        {
            1: ":ids",
            2: ":tokens",
            3: f"array_fill('sent'::text, {n})",
            4: random_ids,
            5: f"array_fill(now(), {n})",
            6: f"array_fill(NULL::float8, {n})",
            7: f"array_fill(NULL::text, {n})",
            8: ":tokens",
            9: ":ids",
            10: ":attempts",
            11: f"array_fill(now(), {n})",
            12: f"array_fill(1::int8, {n})",
            13: f"array_fill(202, {n})",
            14: f"array_fill('accepted'::text, {n})",
            15: f"array_fill(NULL::text, {n})",
            16: random_ids,
            17: f"array_fill(false, {n})",
        },
    )
    return f"{claim}\n\\gset\n{flush};\n"


def ceiling(binary: Path, args: argparse.Namespace) -> float:
    """Rows a second that the claim and flush statements move through Postgres, with no HTTP."""
    clients, batch = args.ceiling_clients, args.batch_size
    transactions = max(1, args.messages // (clients * batch))
    database = Database(binary)
    try:
        database.sql(
            "INSERT INTO messages (phone_number, content)"
            f" SELECT '+90555' || lpad(i::text, 7, '0'), 'bench ' || i FROM generate_series(1, {args.messages}) i"
        )
        database.sql("ANALYZE messages")
        database.sql(CLAIM_FUNCTION.format(claim=statement("postgres/claim_due.sql")))
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
            script.write(ceiling_script())
        done = subprocess.run(
            ["pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", str(clients), "-t", str(transactions),
             "-D", f"batch={batch}", "-f", script.name, database.url],
            capture_output=True,
            text=True,
        )
        Path(script.name).unlink()
        tps = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", done.stdout)
        if done.returncode != 0 or not tps:
            raise StackError(f"pgbench failed: {done.stderr.strip() or done.stdout.strip()}")
        left = database.scalar("SELECT count(*) FROM messages WHERE status <> 'sent'")
        if left > args.messages - transactions * clients * batch:
            raise StackError(f"pgbench left {left:.0f} rows unsent: its statements did not do their work")
        return float(tps.group(1)) * batch
    finally:
        database.drop()


ROWS = [
    ("ingest, POST /messages/batch (msgs/s)", "ingest_per_s", "{:,.0f}"),
    ("end to end, drain (messages/s)", "messages_per_s", "{:,.0f}"),
    ("database ceiling, pgbench (rows/s)", "ceiling_per_s", "{:,.0f}"),
    ("end to end / ceiling", "ratio", "{:.2f}"),
    ("latency p50 at the paced rate (ms)", "latency_p50_ms", "{:.1f}"),
    ("latency p99 at the paced rate (ms)", "latency_p99_ms", "{:.1f}"),
    ("drain (s)", "drain_s", "{:.2f}"),
    ("serve CPU during the drain (s)", "drain_cpu_s", "{:.2f}"),
    ("Postgres CPU during the drain (s)", "drain_postgres_cpu_s", "{:.2f}"),
    ("stand-in provider CPU during the drain (s)", "drain_provider_cpu_s", "{:.2f}"),
    ("serve CPU per message (µs)", "cpu_us_per_message", "{:.1f}"),
    ("serve peak RSS (MB)", "peak_rss_mb", "{:.1f}"),
    ("serve idle RSS (MB)", "idle_rss_mb", "{:.1f}"),
    ("serve start-up to ready (ms)", "startup_ms", "{:.0f}"),
    ("POSTs to the provider", "posts", "{:,.0f}"),
    ("max POSTs per key", "max_posts_per_key", "{:.0f}"),
    ("keys POSTed more than once", "keys_posted_twice", "{:.0f}"),
    ("duplicates (accepted twice)", "duplicates", "{:.0f}"),
]


def table(runs: list[dict[str, Any]], rows=ROWS) -> str:
    header = f"{'':42}" + "".join(f"{f'run {i + 1}':>12}" for i in range(len(runs))) + f"{'median':>12}"
    lines = [header]
    for label, key, fmt in rows:
        if key not in runs[0]:
            continue  # a phase this run skipped
        values = [run[key] for run in runs]
        cells = "".join(f"{fmt.format(v):>12}" for v in values)
        lines.append(f"{label:42}{cells}{fmt.format(statistics.median(values)):>12}")
    return "\n".join(lines)


DRAIN = "drain"
SCENARIOS = [DRAIN, *bench_scenarios.BY_NAME]


def chosen_scenarios(args: argparse.Namespace) -> list[str]:
    names = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown or not names:
        raise StackError(f"unknown scenarios {unknown}: choose from {', '.join(SCENARIOS)}")
    skipped = [name.strip() for name in args.skip.split(",") if name.strip()]
    names = [name for name in names if name not in skipped]
    if args.no_baseline:
        names = [name for name in names if not name.endswith("/apalis")]
    # A scenario read against another of the same run (receipts-drain and mixed-drain against
    # instant-64) comes after it, which is added when it was not chosen.
    for name in list(names):
        reference = getattr(bench_scenarios.BY_NAME.get(name), "compared_to", None)
        if reference is not None and reference not in names[: names.index(name)]:
            if reference in names:
                names.remove(reference)
            names.insert(names.index(name), reference)
    return names


def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    numbers = [key for key, value in runs[0].items() if isinstance(value, (int, float))]
    return {key: statistics.median(run[key] for run in runs) for key in numbers}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", help="insider-messaging to run (default target/release/insider-messaging)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, run in this order (default: all of {','.join(SCENARIOS)})")
    parser.add_argument("--no-baseline", action="store_true",
                        help="leave out the */apalis scenarios, so apalis is not built")
    parser.add_argument("--skip", default="", help="comma-separated scenarios to leave out of --scenarios")
    parser.add_argument("--runs", type=int, default=3, help="runs of every scenario; the tables show each and the median")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiplies the message count of every scenario but drain (which takes --messages)")
    drain = parser.add_argument_group("drain", "the drain scenario, and the ceiling")
    drain.add_argument("--messages", type=int, default=100_000, help="messages per run (default 100000)")
    drain.add_argument("--interval", default="5ms", help="INTERVAL of serve (default 5ms)")
    drain.add_argument("--batch-size", type=int, default=500, help="BATCH_SIZE of serve, and the ceiling's claim")
    drain.add_argument("--concurrency", type=int, default=800, help="WEBHOOK_CONCURRENCY of serve (default 800)")
    drain.add_argument("--latency-rate", type=int, default=2000, help="messages/s of the latency phase")
    drain.add_argument("--latency-seconds", type=float, default=10, help="length of the latency phase; 0 skips it")
    drain.add_argument("--ingest", choices=["api", "sql"], default="api",
                       help="enqueue through POST /messages/batch (default) or one SQL INSERT")
    drain.add_argument("--ceiling-clients", type=int, default=2, help="pgbench clients (default 2, one a core)")
    args = parser.parse_args()

    try:
        binary = find_binary(args.binary)
        selected = chosen_scenarios(args)
        about = machine()
        print(f"insider-messaging bench: {', '.join(selected)}; {args.runs} runs of each", flush=True)
        print(
            f"machine: {about['cpu']}, {about['cores']} cores, {about['memory']}, Linux {about['kernel']}, "
            f"PostgreSQL {about['postgres']}; scripts at commit {about['commit']}",
            flush=True,
        )
        # The binary may be another commit's (--binary): what it says of itself, and when it was built.
        version = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout.strip()
        built = datetime.fromtimestamp(binary.stat().st_mtime, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        about["binary"] = f"{binary} ({version or 'no --version'}, built {built})"
        print(f"binary: {about['binary']}", flush=True)
        scenarios = {name: bench_scenarios.BY_NAME.get(name) for name in selected}
        needs_ceiling = any(name == DRAIN or scenario.against_ceiling for name, scenario in scenarios.items())
        needs_apalis = any(scenario and scenario.baseline_of for scenario in scenarios.values())
        apalis = bench_scenarios.build_apalis() if needs_apalis else None
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in selected}
        for number in range(1, args.runs + 1):
            # Once a run: the drain and instant-64 read the same ceiling (same rows, same claim size).
            ceiling_per_s = ceiling(binary, args) if needs_ceiling else None
            if ceiling_per_s is not None:
                print(f"run {number} ceiling: {ceiling_per_s:,.0f} rows/s", flush=True)
            for name, scenario in scenarios.items():
                if scenario is None:
                    result = one_run(binary, args)
                else:
                    result = bench_scenarios.run(scenario, binary, apalis, args.scale)
                if scenario is None or scenario.against_ceiling:
                    result["ceiling_per_s"] = ceiling_per_s
                    result["ratio"] = result["messages_per_s"] / ceiling_per_s
                if scenario is not None and scenario.compared_to is not None:
                    plain = runs[scenario.compared_to][-1]["messages_per_s"]
                    result["ratio_to_plain"] = result["messages_per_s"] / plain
                runs[name].append(result)
                if scenario is None:
                    line = f"{result['messages_per_s']:,.0f} messages/s"
                else:
                    line = bench_scenarios.summary(scenario, result)
                print(f"run {number} {name}: {line}", flush=True)
    except StackError as error:
        print(f"bench failed: {error}", file=sys.stderr)
        return 1
    for name, scenario in scenarios.items():
        if scenario is None:
            about_it = (f"{args.messages:,} messages, INTERVAL={args.interval} BATCH_SIZE={args.batch_size} "
                        f"WEBHOOK_CONCURRENCY={args.concurrency}; latency phase {args.latency_rate}/s for "
                        f"{args.latency_seconds:g}s")
        else:
            about_it = f"{scenario.about}; {runs[name][0]['messages']:,} messages"
        print(f"\n{name}: {about_it}")
        print(table(runs[name], ROWS if scenario is None else scenario.rows))
    judged = bench_scenarios.verdicts(runs, args.scale)
    if judged:
        print("\ntargets (issues 12, 13 and 14), on the medians:")
        print(bench_scenarios.verdict_table(judged))
    out = ROOT / "target" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    report = {
        "machine": about,
        "args": vars(args),
        "scenarios": {name: {"runs": runs[name], "median": medians(runs[name])} for name in selected},
        "targets": [{key: value for key, value in row.items() if key != "format"} for row in judged],
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
