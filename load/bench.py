#!/usr/bin/env python3
"""`make bench`: end-to-end throughput of insider-messaging on Postgres, and the database's own ceiling.

Each run starts a fresh Postgres database, the stand-in provider and `serve` as separate processes
(load/stack.py), then:

1. ingest: enqueues N messages through `POST /messages/batch` (1,000 a request, 4 connections) while
   sending is stopped, and times it;
2. drain: `POST /scheduler/start` with the throttle open (INTERVAL, BATCH_SIZE, WEBHOOK_CONCURRENCY
   below) and waits until every message is `sent`. messages/s = N / (the last result's commit - start);
3. latency: enqueues messages at a steady --latency-rate for --latency-seconds while sending runs, and
   takes p50/p99 of `sent_at - created_at` over them: from the enqueue to the provider's 202 in hand,
   an upper bound of the provider's receipt. (The drain's own latency is only its queueing delay.)
4. ceiling: pgbench runs the claim and the flush statements of src/store/postgres.rs (read from that
   file, so they cannot drift), with no HTTP, on a fresh table of N pending rows.

It prints one column per run and the median, and writes them as JSON under target/bench/. A run fails
(exit 1) when a message is not sent or any key is POSTed more than once.

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
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import (  # noqa: E402
    ROOT,
    Database,
    Http,
    Stack,
    StackError,
    find_binary,
    machine,
    postgres_cpu_seconds,
    postgres_statement,
    wait_until,
)

INGEST_BATCH = 1000
INGEST_CONNECTIONS = 4
LATENCY_BATCH_EVERY = 0.01


def message(i: int, prefix: str) -> dict[str, str]:
    return {"to": f"+90555{i:07d}", "content": f"{prefix} {i}: Insider - Project"}


def ingest(url: str, n: int, prefix: str) -> float:
    """Enqueues `n` messages in batches over a few connections; returns the seconds it took."""
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
            status, answer = client.request("POST", "/messages/batch", {"messages": [message(i, prefix) for i in batch]})
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
        print(f"---- serve log ({stack.serve.log_path if stack.serve else 'not started'}) ----", file=sys.stderr)
        if stack.serve:
            print(stack.serve.tail(), file=sys.stderr)
        raise
    finally:
        codes = stack.close()
    result["serve_exit"] = codes.get("serve", -1)
    if result["serve_exit"] != 0:
        raise StackError(f"serve exited {result['serve_exit']} on SIGTERM")
    return result


def substitute(sql: str, values: dict[int, str]) -> str:
    """Puts pgbench expressions where the statement has $n (highest n first, so $1 never eats $10)."""
    for number in sorted(values, reverse=True):
        sql = sql.replace(f"${number}", values[number])
    if re.search(r"\$\d", sql):
        raise StackError(f"a parameter was left unbound: {sql}")
    return " ".join(sql.split())


def ceiling_script() -> str:
    """The claim, its rows gathered into arrays, then the flush of them all as accepted."""
    claim = postgres_statement("CLAIM_DUE")
    head, _, returning = claim.rpartition("RETURNING")
    with_due, update, rest = head.partition("UPDATE messages m")
    if not update:
        raise StackError("CLAIM_DUE no longer reads WITH due AS (...) UPDATE messages m ... RETURNING ...")
    claim = substitute(
        f"{with_due.rstrip()}, claimed AS ({update}{rest} RETURNING {returning})"
        " SELECT array_agg(id) AS ids, array_agg(lease_token) AS tokens, array_agg(attempts) AS attempts FROM claimed",
        {1: ":batch", 2: "'pgbench'", 3: "30"},
    )
    n = "ARRAY[cardinality(:ids::uuid[])]"
    random_ids = "(SELECT array_agg(gen_random_uuid()::text) FROM unnest(:ids::uuid[]))"
    flush = substitute(
        postgres_statement("FINISH_CLAIMS"),
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


def table(runs: list[dict[str, float]]) -> str:
    header = f"{'':42}" + "".join(f"{f'run {i + 1}':>12}" for i in range(len(runs))) + f"{'median':>12}"
    lines = [header]
    for label, key, fmt in ROWS:
        if key not in runs[0]:
            continue  # a phase this run skipped
        values = [run[key] for run in runs]
        cells = "".join(f"{fmt.format(v):>12}" for v in values)
        lines.append(f"{label:42}{cells}{fmt.format(statistics.median(values)):>12}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", help="insider-messaging to run (default target/release/insider-messaging)")
    parser.add_argument("--messages", type=int, default=100_000, help="messages per run (default 100000)")
    parser.add_argument("--runs", type=int, default=3, help="runs; the table shows each and the median")
    parser.add_argument("--interval", default="5ms", help="INTERVAL of serve (default 5ms)")
    parser.add_argument("--batch-size", type=int, default=500, help="BATCH_SIZE of serve, and the ceiling's claim")
    parser.add_argument("--concurrency", type=int, default=800, help="WEBHOOK_CONCURRENCY of serve (default 800)")
    parser.add_argument("--latency-rate", type=int, default=2000, help="messages/s of the latency phase")
    parser.add_argument("--latency-seconds", type=float, default=10, help="length of the latency phase; 0 skips it")
    parser.add_argument("--ingest", choices=["api", "sql"], default="api",
                        help="enqueue through POST /messages/batch (default) or one SQL INSERT")
    parser.add_argument("--ceiling-clients", type=int, default=2, help="pgbench clients (default 2, one a core)")
    args = parser.parse_args()

    try:
        binary = find_binary(args.binary)
        about = machine()
        print(
            f"insider-messaging bench: {args.messages:,} messages a run, {args.runs} runs; INTERVAL={args.interval} "
            f"BATCH_SIZE={args.batch_size} WEBHOOK_CONCURRENCY={args.concurrency}; latency phase "
            f"{args.latency_rate}/s for {args.latency_seconds:g}s",
            flush=True,
        )
        print(
            f"machine: {about['cpu']}, {about['cores']} cores, {about['memory']}, Linux {about['kernel']}, "
            f"PostgreSQL {about['postgres']}; commit {about['commit']}",
            flush=True,
        )
        runs = []
        for number in range(1, args.runs + 1):
            result = one_run(binary, args)
            result["ceiling_per_s"] = ceiling(binary, args)
            result["ratio"] = result["messages_per_s"] / result["ceiling_per_s"]
            runs.append(result)
            print(
                f"run {number}: {result['messages_per_s']:,.0f} messages/s, ceiling {result['ceiling_per_s']:,.0f} "
                f"rows/s",
                flush=True,
            )
    except StackError as error:
        print(f"bench failed: {error}", file=sys.stderr)
        return 1
    print()
    print(table(runs))
    out = ROOT / "target" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"machine": about, "args": vars(args), "runs": runs}, indent=2) + "\n")
    print(f"\nwritten to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
