"""The scenarios of `make bench` beside bench.py's drain, their apalis baseline, and the targets they are
read against.

Every scenario but receipts-ingest runs as the drain of bench.py does: enqueue with sending stopped,
`POST /scheduler/start`, and time until the last result is committed. Only `INTERVAL=5ms BATCH_SIZE=500`
and, where named, `WEBHOOK_CONCURRENCY` are set (beside the keys and URLs that switch receipts and status
webhooks on); every other knob is at its default, so a target is met at the defaults or not at all. The
stand-in provider checks an auth key that both sides send.

- latency-bound: the provider answers after 20 ms, 64 connections, 20,000 messages. 64 connections
  over 20 ms make at most 3,200 messages/s: the target is 0.90 of that.
- instant-64: the provider answers at once, 64 connections, 100,000 messages: at least 10,000
  messages/s, and 0.45 of the database's ceiling (bench.py's pgbench of the claim and the flush).
- latency-bound/apalis and instant-64/apalis: apalis 1.x on its Postgres storage with reqwest
  (load/apalis-baseline, built here on first use) doing the same job with the same provider at the same
  64 connections; ours must do 1.5 times its messages/s (the median of the per-run ratios).
- rate-limit: 3 replicas on one database with `RATE_LIMIT=200/s`, 6,000 messages: the most POSTs the
  provider saw in any one-second window (at most 220) and the average rate (at least 180/s).
- quota-429: 2 replicas, no `RATE_LIMIT`, a provider that answers 429 with `Retry-After: 1` beyond 100
  POSTs in a wall-clock second, `MAX_RETRIES=3`, 2,000 messages: all sent, none failed, and at most a
  quarter of the POSTs answered 429.
- receipts-drain (issue 13): instant-64 with delivery receipts and status webhooks on: the stand-in
  posts a receipt for each message 1 s after its 202 (`CALLBACK_AUTH_KEY` set), and the service delivers
  a `message.sent` and a `message.delivered` event a message to load/status_receiver.py, which answers
  204 (`STATUS_WEBHOOK_URL`, `STATUS_WEBHOOK_SECRET`). At least 0.70 of instant-64's messages/s in the
  same run, and the outbox keeps pace: its depth at the drain's end is reported, and it must be empty
  within `OUTBOX_KEEPS_UP_S` of it.
- receipts-drain-batched (issue 13): receipts-drain with the stand-in posting the receipts that wait
  for a free POST together, as one JSON array of up to 1,000 (`--receipt-batch 1000`; the contract
  allows arrays), as a provider's receipt queue does once it falls behind. No target of its own: beside
  receipts-drain, it shows what the one-per-request receipts cost (receipts-ingest asks 2,000 receipts/s
  one per request, 10,000 in batches, and the drain's messages need one each).
- mixed-drain (issue 14): instant-64 with priorities high, normal and low in turn, and a fifth of the
  rows scheduled a day ahead (`send_at`; 25,000 beside the 100,000 due, which stay pending): at least
  0.90 of instant-64's messages/s in the same run. bench.py runs instant-64 first when these three are
  chosen without it.
- receipts-ingest (issue 13): `POST /receipts` on 120,000 sent rows filled by SQL (a provider id each,
  so every receipt matches one and the applier does real work): 100,000 receipts in batches of 1,000
  over 4 connections, at least 10,000 receipts/s answered 202; then 20,000 one per request over 16
  connections, at least 2,000/s. Each phase also reports the rate until its last receipt was applied.
- backlog-pause: 1,000,000 messages, `WEBHOOK_CONCURRENCY=64`, and the database stops answering for 30 s
  once a fifth of them is sent (a transaction holds `LOCK TABLE messages IN ACCESS EXCLUSIVE MODE`, so
  every statement on the queue waits, as on a paused database; the shared Postgres cannot be stopped):
  the peak RSS of `serve` stays at most 100 MB, nothing is lost and nothing is POSTed twice.

A run fails (StackError) when the harness cannot trust what it saw: a message left neither sent nor
failed, a message failed where no fault was injected, a key accepted twice, a key POSTed twice when the
provider never asked for a retry, a scheduled row sent, a receipt refused or not applied, a status event
that the receiver got other than once, or a `serve` that did not exit cleanly. A missed target is a
verdict in the table, not a failure; nor is an outbox still not empty DRAIN_TIMEOUT after the drain
(its figures say so).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from enqueue import ingest
from receipts import fill_sent, post_receipts, receipt, request_bytes
from stack import ROOT, Http, Stack, StackError, postgres_cpu_seconds, redis_cpu_seconds, wait_until

# The stand-in provider requires it and both sides send it, as `x-ins-auth-key`.
AUTH_KEY = "bench-auth-key"
# The service's CALLBACK_AUTH_KEY: what the stand-in (or receipts-ingest) sends with each receipt.
CALLBACK_KEY = "bench-callback-key"
# The one throttle the issue sets in every scenario.
THROTTLE = {"INTERVAL": "5ms", "BATCH_SIZE": "500"}
APALIS_MANIFEST = ROOT / "load" / "apalis-baseline" / "Cargo.toml"
APALIS_TARGET = ROOT / "target" / "apalis-baseline"
APALIS_BINARY = APALIS_TARGET / "release" / "apalis-baseline"
# A scenario's drain may take this long before the run gives up on it.
DRAIN_TIMEOUT = 600
# receipts-ingest: receipts per request and connections of its two phases, and the share of its
# receipts posted one per request (the rest go in batches).
RECEIPT_BATCH = 1_000
RECEIPT_BATCH_CONNECTIONS = 4
RECEIPT_SINGLE_CONNECTIONS = 16
RECEIPT_SINGLE_SHARE = 1 / 6


@dataclass(frozen=True)
class Scenario:
    name: str
    about: str
    messages: int
    # Our scenarios: the environment of every `serve` (beyond THROTTLE), and how many replicas.
    serve_env: dict[str, str] = field(default_factory=dict)
    replicas: int = 1
    provider_args: tuple[str, ...] = ()
    # Set for a baseline: the scenario of ours it repeats, with the same provider.
    baseline_of: str | None = None
    # The rows of its table: label, key of the result, format.
    rows: tuple[tuple[str, str, str], ...] = ()
    # Whether bench.py should put the database's ceiling beside its messages/s.
    against_ceiling: bool = False
    # The database stops answering for this long once this share of the messages is accepted.
    pause: tuple[float, int] | None = None
    # The stand-in posts a delivery receipt for each accepted message (CALLBACK_AUTH_KEY set), and the
    # service delivers its status events to load/status_receiver.py (STATUS_WEBHOOK_URL set).
    receipts: bool = False
    status_webhooks: bool = False
    # The priorities given in turn to the messages, and the share of rows (beyond `messages`, which
    # are the due ones) scheduled a day ahead: they stay pending through the drain.
    priorities: tuple[str, ...] = ()
    scheduled_share: float = 0.0
    # The scenario of the same run whose messages/s this one is read against (bench.py adds it).
    compared_to: str | None = None
    # Runs it instead of `run_ours` (a scenario that is not a drain).
    runner: Callable[[Scenario, Path, float], dict[str, Any]] | None = None

    def scaled(self, scale: float) -> int:
        return max(1, round(self.messages * scale))


THROUGHPUT_ROWS = (
    ("messages/s", "messages_per_s", "{:,.0f}"),
    ("drain (s)", "drain_s", "{:.2f}"),
    ("serve CPU per message (µs)", "cpu_us_per_message", "{:.1f}"),
    ("Postgres CPU during the drain (s)", "drain_postgres_cpu_s", "{:.2f}"),
    ("stand-in provider CPU during the drain (s)", "drain_provider_cpu_s", "{:.2f}"),
    ("cores busy during the drain (all processes of the run)", "cores_busy", "{:.2f}"),
    ("most POSTs in any one second", "max_in_any_second", "{:,.0f}"),
    ("POSTs to the provider", "posts", "{:,.0f}"),
)
PAUSE_ROWS = (
    ("messages/s, the pause included", "messages_per_s", "{:,.0f}"),
    ("drain (s)", "drain_s", "{:.2f}"),
    ("serve peak RSS (MB)", "peak_rss_mb", "{:.1f}"),
    ("POSTs while the database was paused", "posts_during_pause", "{:,.0f}"),
    ("POSTs to the provider", "posts", "{:,.0f}"),
    ("keys POSTed more than once", "keys_posted_twice", "{:.0f}"),
)
BASELINE_ROWS = (
    ("messages/s", "messages_per_s", "{:,.0f}"),
    ("drain (s)", "drain_s", "{:.2f}"),
    ("enqueue, push_bulk (s)", "enqueue_s", "{:.2f}"),
    ("most POSTs in any one second", "max_in_any_second", "{:,.0f}"),
    ("POSTs to the provider", "posts", "{:,.0f}"),
    ("keys POSTed more than once", "keys_posted_twice", "{:.0f}"),
)
RECEIPTS_DRAIN_ROWS = (
    *THROUGHPUT_ROWS,
    ("messages/s / instant-64's, same run", "ratio_to_plain", "{:.2f}"),
    ("outbox depth at the drain's end", "outbox_depth_at_end", "{:,.0f}"),
    ("receipts the stand-in had yet to post then", "receipts_unposted_at_end", "{:,.0f}"),
    ("status event written to delivered, p50 (s)", "event_lag_p50_s", "{:.2f}"),
    ("status event written to delivered, p99 (s)", "event_lag_p99_s", "{:.2f}"),
    ("outbox empty, s after the drain's end", "outbox_empty_after_s", "{:.2f}"),
    ("status events left at the timeout", "outbox_left", "{:,.0f}"),
    ("status events delivered/s, start to empty", "events_per_s", "{:,.0f}"),
    ("messages delivered (receipts applied)", "delivered", "{:,.0f}"),
    ("receipts the stand-in posted", "receipts_sent", "{:,.0f}"),
    ("POSTs that carried them", "receipt_requests", "{:,.0f}"),
    ("status events the receiver got", "events_received", "{:,.0f}"),
    ("CPU, start to outbox empty: serve (s)", "whole_serve_cpu_s", "{:.2f}"),
    ("CPU, start to outbox empty: Postgres (s)", "whole_postgres_cpu_s", "{:.2f}"),
    ("CPU, start to outbox empty: stand-in (s)", "whole_provider_cpu_s", "{:.2f}"),
    ("CPU, start to outbox empty: receiver (s)", "whole_receiver_cpu_s", "{:.2f}"),
)
MIXED_DRAIN_ROWS = (
    *THROUGHPUT_ROWS,
    ("messages/s / instant-64's, same run", "ratio_to_plain", "{:.2f}"),
    ("scheduled rows, still pending", "scheduled", "{:,.0f}"),
)
RECEIPTS_INGEST_ROWS = (
    ("batches of 1,000: receipts/s (202)", "batched_per_s", "{:,.0f}"),
    ("batches of 1,000: applied/s", "batched_applied_per_s", "{:,.0f}"),
    ("batches of 1,000: request p99 (ms)", "batched_p99_ms", "{:.1f}"),
    ("one per request: receipts/s (202)", "single_per_s", "{:,.0f}"),
    ("one per request: applied/s", "single_applied_per_s", "{:,.0f}"),
    ("one per request: request p50 (ms)", "single_p50_ms", "{:.1f}"),
    ("one per request: request p99 (ms)", "single_p99_ms", "{:.1f}"),
    ("serve CPU per receipt (µs)", "cpu_us_per_receipt", "{:.1f}"),
    ("Postgres CPU, both phases (s)", "postgres_cpu_s", "{:.2f}"),
)
FLOW_ROWS = (
    ("sent", "sent", "{:,.0f}"),
    ("failed", "failed", "{:,.0f}"),
    ("average rate (messages sent/s)", "messages_per_s", "{:,.1f}"),
    ("drain (s)", "drain_s", "{:.2f}"),
    ("most POSTs in any one second", "max_in_any_second", "{:,.0f}"),
    ("POSTs to the provider", "posts", "{:,.0f}"),
    ("POSTs answered 429", "throttled", "{:,.0f}"),
    ("share of POSTs answered 429", "throttled_share", "{:.3f}"),
)

SCENARIOS = (
    Scenario(
        "latency-bound",
        "stand-in provider --latency 20ms, WEBHOOK_CONCURRENCY=64",
        20_000,
        serve_env={"WEBHOOK_CONCURRENCY": "64"},
        provider_args=("--latency", "20ms"),
        rows=THROUGHPUT_ROWS,
    ),
    Scenario(
        "latency-bound/apalis",
        "apalis + reqwest, --latency 20ms, concurrency 64, batch 64",
        20_000,
        provider_args=("--latency", "20ms"),
        baseline_of="latency-bound",
        rows=BASELINE_ROWS,
    ),
    Scenario(
        "instant-64",
        "instant stand-in provider, WEBHOOK_CONCURRENCY=64",
        100_000,
        serve_env={"WEBHOOK_CONCURRENCY": "64"},
        rows=(*THROUGHPUT_ROWS, ("database ceiling, pgbench (rows/s)", "ceiling_per_s", "{:,.0f}"),
              ("messages/s / ceiling", "ratio", "{:.2f}")),
        against_ceiling=True,
    ),
    Scenario(
        "receipts-drain",
        "instant-64 with receipts (the stand-in posts each 1 s after its 202) and status webhooks to a receiver "
        "answering 204",
        100_000,
        serve_env={"WEBHOOK_CONCURRENCY": "64"},
        rows=RECEIPTS_DRAIN_ROWS,
        receipts=True,
        status_webhooks=True,
        compared_to="instant-64",
    ),
    Scenario(
        "receipts-drain-batched",
        "receipts-drain with the stand-in posting the receipts that wait for a free POST together, up to "
        "1,000 an array (--receipt-batch 1000)",
        100_000,
        serve_env={"WEBHOOK_CONCURRENCY": "64"},
        provider_args=("--receipt-batch", "1000"),
        rows=RECEIPTS_DRAIN_ROWS,
        receipts=True,
        status_webhooks=True,
        compared_to="instant-64",
    ),
    Scenario(
        "mixed-drain",
        "instant-64 with priorities high/normal/low in turn and a fifth of the rows scheduled a day ahead",
        100_000,
        serve_env={"WEBHOOK_CONCURRENCY": "64"},
        rows=MIXED_DRAIN_ROWS,
        priorities=("high", "normal", "low"),
        scheduled_share=0.2,
        compared_to="instant-64",
    ),
    Scenario(
        "instant-64/apalis",
        "apalis + reqwest, instant provider, concurrency 64, batch 64",
        100_000,
        baseline_of="instant-64",
        rows=BASELINE_ROWS,
    ),
    Scenario(
        "rate-limit",
        "3 replicas, RATE_LIMIT=200/s, WEBHOOK_CONCURRENCY at its default",
        6_000,
        serve_env={"RATE_LIMIT": "200/s"},
        replicas=3,
        rows=FLOW_ROWS,
    ),
    Scenario(
        "quota-429",
        "2 replicas, no RATE_LIMIT, stand-in --quota 100/s --retry-after 1s, MAX_RETRIES=3",
        2_000,
        serve_env={"MAX_RETRIES": "3"},
        replicas=2,
        provider_args=("--quota", "100/s", "--retry-after", "1s"),
        rows=FLOW_ROWS,
    ),
    Scenario(
        "receipts-ingest",
        f"POST /receipts on sent rows filled by SQL, one receipt each: in batches of 1,000 over "
        f"{RECEIPT_BATCH_CONNECTIONS} connections, then one per request over {RECEIPT_SINGLE_CONNECTIONS}",
        120_000,
        rows=RECEIPTS_INGEST_ROWS,
        runner=lambda scenario, binary, scale: run_receipts_ingest(scenario, binary, scale),
    ),
    Scenario(
        "backlog-pause",
        "1,000,000 messages, WEBHOOK_CONCURRENCY=64, the database paused 30 s a fifth of the way",
        1_000_000,
        serve_env={"WEBHOOK_CONCURRENCY": "64"},
        rows=PAUSE_ROWS,
        pause=(0.2, 30),
    ),
)
BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}

# 64 connections, each busy 20 ms a message.
LATENCY_BOUND_IDEAL = 64 / 0.020
# An outbox that keeps pace with the drain is empty this long after its last send: the stand-in's
# receipt comes 1 s after the 202, and the status dispatcher looks every 0.5 s. One that falls behind
# is empty only after its backlog / its rate, which grows with the drain.
OUTBOX_KEEPS_UP_S = 2.0


def final_count(stack: Stack) -> float:
    return stack.database.scalar("SELECT count(*) FROM messages WHERE status IN ('sent', 'failed')")


def wait_for_drain(stack: Stack, n: int) -> None:
    """Waits until all `n` messages are sent or failed: on the provider's count while it can (sparing the
    database a count during the drain), on the rows once a second, and on the rows alone at the end."""
    last_look = [time.monotonic()]

    def provider_has_all_or_rows_are_final() -> bool:
        if stack.provider_stats()["accepted"] >= n:
            return True
        if time.monotonic() - last_look[0] < 1:
            return False
        last_look[0] = time.monotonic()
        return final_count(stack) >= n

    wait_until("the provider has accepted every message", provider_has_all_or_rows_are_final, DRAIN_TIMEOUT, 0.05)
    wait_until("every message is sent or failed", lambda: final_count(stack) >= n, 60, 0.05)


def message_fields(scenario: Scenario, due: int) -> tuple[int, Callable[[int], dict[str, Any]] | None]:
    """How many rows `scenario` enqueues for `due` due ones, and the optional fields of row `i`: its
    priority in turn, and for an evenly spread `scheduled_share` of the rows a `send_at` a day ahead."""
    if not scenario.priorities and not scenario.scheduled_share:
        return due, None
    scheduled = round(due * scenario.scheduled_share / (1 - scenario.scheduled_share))
    total = due + scheduled
    send_at = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    priorities = scenario.priorities or ("normal",)

    def fields(i: int) -> dict[str, Any]:
        extra: dict[str, Any] = {"priority": priorities[i % len(priorities)]}
        if (i + 1) * scheduled // total > i * scheduled // total:
            extra["send_at"] = send_at
        return extra

    return total, fields


def run_ours(scenario: Scenario, binary: Path, scale: float) -> dict[str, Any]:
    """One run of one of our scenarios: enqueue, start, drain; what the rows and the provider say."""
    n = scenario.scaled(scale)
    env = {**THROTTLE, **scenario.serve_env, "AUTOSTART": "false", "WEBHOOK_AUTH_KEY": AUTH_KEY}
    stack = Stack(binary, env, [*scenario.provider_args, "--auth-key", AUTH_KEY], scenario.replicas,
                  callback_key=CALLBACK_KEY if scenario.receipts else None, status_webhooks=scenario.status_webhooks)
    result: dict[str, Any] = {"messages": n}
    try:
        rows, fields = message_fields(scenario, n)
        ingest(stack.url, rows, scenario.name, fields)
        stack.database.sql("ANALYZE messages")
        cpu_before = sum(replica.cpu_seconds() for replica in stack.replicas)
        postgres_before = postgres_cpu_seconds()
        provider_before = stack.provider.cpu_seconds()
        receiver_before = stack.receiver.cpu_seconds() if stack.receiver is not None else 0.0
        others_before = redis_cpu_seconds() + sum(os.times()[:4])
        client = Http(stack.url)
        started = time.time()
        status, _ = client.request("POST", "/scheduler/start")
        client.close()
        if status != 200:
            raise StackError(f"POST /scheduler/start answered {status}")
        if scenario.pause is not None:
            share, seconds = scenario.pause
            wait_until("the pause's share is sent", lambda: stack.provider_stats()["accepted"] >= n * share,
                       DRAIN_TIMEOUT, 0.05)
            result["posts_during_pause"] = pause_database(stack, seconds)
        wait_for_drain(stack, n)
        # Every process on the two cores, read at one instant: how close the drain came to using them all.
        drain_cpu = sum(replica.cpu_seconds() for replica in stack.replicas) - cpu_before
        result["drain_postgres_cpu_s"] = postgres_cpu_seconds() - postgres_before
        result["drain_provider_cpu_s"] = stack.provider.cpu_seconds() - provider_before
        drain_receiver_cpu = stack.receiver.cpu_seconds() - receiver_before if stack.receiver is not None else 0.0
        # Redis and this script too, with the psql it ran and waited for.
        others = redis_cpu_seconds() + sum(os.times()[:4]) - others_before
        result["cores_busy"] = (drain_cpu + result["drain_postgres_cpu_s"] + result["drain_provider_cpu_s"]
                                + drain_receiver_cpu + others) / (time.time() - started)
        if scenario.status_webhooks:
            result["outbox_depth_at_end"] = stack.database.scalar(
                "SELECT count(*) FROM status_events WHERE status = 'pending'")
        if scenario.receipts:
            # The stand-in posts each receipt a second after its 202, a few at a time: those it has not
            # posted yet are events the outbox cannot have.
            result["receipts_unposted_at_end"] = n - stack.provider_stats()["receipts_sent"]
        result["peak_rss_mb"] = max(replica.peak_rss_mb() for replica in stack.replicas)
        sent, failed, scheduled = (
            float(value or 0)
            for value in stack.database.sql(
                "SELECT count(*) FILTER (WHERE status = 'sent'), count(*) FILTER (WHERE status = 'failed'),"
                " count(*) FILTER (WHERE status = 'pending' AND send_at > now()) FROM messages"
            ).split("|")
        )
        result["sent"], result["failed"] = sent, failed
        if scenario.scheduled_share:
            result["scheduled"] = scheduled
        last_commit = stack.database.scalar(
            # A receipt moves its message's updated_at too: there the message.sent event, written in the
            # flush's transaction, is its commit time.
            "SELECT extract(epoch FROM max(created_at)) FROM status_events WHERE type = 'message.sent'"
            if scenario.status_webhooks
            else "SELECT extract(epoch FROM max(updated_at)) FROM messages"
        )
        result["drain_s"] = last_commit - started
        result["messages_per_s"] = sent / result["drain_s"]
        result["cpu_us_per_message"] = drain_cpu / n * 1e6
        result.update(provider_figures(stack.provider_stats()))
        check_ours(scenario, result, n)
        if scenario.receipts:
            result.update(wait_for_outbox(stack, n, started, last_commit))
            # Where the two cores went from the start to the empty outbox: the service's processes and
            # the stand-ins of the provider and the sender's receiver, which share them.
            result["whole_serve_cpu_s"] = sum(replica.cpu_seconds() for replica in stack.replicas) - cpu_before
            result["whole_postgres_cpu_s"] = postgres_cpu_seconds() - postgres_before
            result["whole_provider_cpu_s"] = stack.provider.cpu_seconds() - provider_before
            if stack.receiver is not None:
                result["whole_receiver_cpu_s"] = stack.receiver.cpu_seconds() - receiver_before
        if scenario.scheduled_share and scheduled != rows - n:
            raise StackError(f"{scenario.name}: {rows - n} rows scheduled a day ahead, {scheduled:.0f} still pending")
    except BaseException:
        stack.print_logs()
        raise
    finally:
        codes = stack.close()
    unclean = {name: code for name, code in codes.items() if name.startswith("serve") and code != 0}
    if unclean:
        raise StackError(f"{scenario.name}: serve exited {unclean} on SIGTERM")
    return result


def wait_for_outbox(stack: Stack, n: int, started: float, last_commit: float) -> dict[str, Any]:
    """After the drain of `n` messages with receipts and status webhooks on: waits until every receipt is
    applied and every status event (a message.sent and a message.delivered a message) is delivered, and
    checks that the receiver got each once. An outbox still not empty after DRAIN_TIMEOUT is a figure,
    not a failure: how many events were left, and the wait as a lower bound of the time to empty."""
    wait_until("the stand-in has posted every receipt", lambda: stack.provider_stats()["receipts_sent"] >= n,
               DRAIN_TIMEOUT, 0.1)
    refused = stack.provider_stats()["receipts_refused"]
    if refused:
        raise StackError(f"the service refused {refused} of the stand-in's receipts")
    # On the receiver's count while events arrive (a count of status_events every 100 ms would load the
    # database it measures), then on the rows, which record each delivery after its POST.
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while stack.receiver_stats()["distinct"] < 2 * n and time.monotonic() < deadline:
        time.sleep(0.1)
    while (stack.database.scalar("SELECT count(*) FROM status_events WHERE status = 'delivered'") < 2 * n
           and time.monotonic() < deadline):
        time.sleep(0.1)
    waited_until = time.time()
    # With the outbox's own pace, whatever the receipts' (an event exists from its change's commit): how
    # long events waited from written to delivered.
    delivered_events, emptied, delivered, lag_p50, lag_p99 = (
        float(value or 0)
        for value in stack.database.sql(
            "SELECT (SELECT count(*) FROM status_events WHERE status = 'delivered'),"
            " (SELECT extract(epoch FROM max(delivered_at)) FROM status_events),"
            " (SELECT count(*) FROM messages WHERE delivery_status = 'delivered'),"
            " lag.p50, lag.p99"
            " FROM (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - created_at)) AS p50,"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - created_at)) AS p99"
            " FROM status_events WHERE status = 'delivered') AS lag"
        ).split("|")
    )
    receiver = stack.receiver_stats()
    figures = {
        "event_lag_p50_s": lag_p50,
        "event_lag_p99_s": lag_p99,
        "outbox_left": 2 * n - delivered_events,
        "events_per_s": delivered_events / (emptied - started) if delivered_events else 0.0,
        "delivered": delivered,
        "receipts_sent": stack.provider_stats()["receipts_sent"],
        # A stand-in from before --receipt-batch (a binary under comparison) posted each alone.
        "receipt_requests": stack.provider_stats().get("receipt_requests", stack.provider_stats()["receipts_sent"]),
        "events_received": receiver["received"],
    }
    if delivered_events < 2 * n:
        print(f"{2 * n - delivered_events:,.0f} status events not delivered {DRAIN_TIMEOUT} s after the drain",
              file=sys.stderr, flush=True)
        return {**figures, "outbox_empty_after_s": waited_until - last_commit}
    by_type = receiver["by_type"]
    if delivered != n:
        raise StackError(f"{n} messages, {delivered:.0f} delivered after their receipts")
    if by_type.get("message.sent") != n or by_type.get("message.delivered") != n or receiver["distinct"] != 2 * n:
        raise StackError(f"{n} messages, and the status receiver got {receiver['distinct']} events: {by_type}")
    # Each message once of each kind: the totals would pass one told twice beside one told nothing.
    if receiver["pairs"] != 2 * n or receiver["pairs_repeated"]:
        raise StackError(
            f"{n} messages, and the status receiver got {receiver['pairs']} of their 2 kinds of event,"
            f" {receiver['pairs_repeated']} of them under two ids")
    return {**figures, "outbox_empty_after_s": emptied - last_commit}


def run_receipts_ingest(scenario: Scenario, binary: Path, scale: float) -> dict[str, Any]:
    """One run of receipts-ingest: sent rows filled by SQL, then a receipt for each through
    `POST /receipts`, in batches, then one per request; each phase timed to its last 202, and until the
    applier has settled its last receipt."""
    n = scenario.scaled(scale)
    single = max(1, round(n * RECEIPT_SINGLE_SHARE))
    batched = n - single
    env = {**THROTTLE, "AUTOSTART": "false", "WEBHOOK_AUTH_KEY": AUTH_KEY, "CALLBACK_AUTH_KEY": CALLBACK_KEY}
    stack = Stack(binary, env, ["--auth-key", AUTH_KEY])
    result: dict[str, Any] = {"messages": n}
    try:
        fill_sent(stack.database, 0, n)
        cpu_before, postgres_before = stack.serve.cpu_seconds(), postgres_cpu_seconds()
        phases = (
            ("batched", range(0, batched), RECEIPT_BATCH, RECEIPT_BATCH_CONNECTIONS),
            ("single", range(batched, n), 1, RECEIPT_SINGLE_CONNECTIONS),
        )
        settled = 0
        for phase, ids, per_request, connections in phases:
            if per_request == 1:
                bodies: list[Any] = [receipt(i) for i in ids]
            else:
                bodies = [[receipt(i) for i in ids[k:k + per_request]] for k in range(0, len(ids), per_request)]
            requests = [request_bytes(stack.url, CALLBACK_KEY, body) for body in bodies]
            posted = post_receipts(stack.url, requests, connections)
            if posted["statuses"] != {202: len(bodies)}:
                raise StackError(f"{scenario.name}: POST /receipts answered {posted['statuses']}")
            settled += len(ids)
            wait_until(f"the {phase} receipts are settled", lambda: stack.database.scalar(
                "SELECT count(*) FROM receipts WHERE outcome <> 'pending'") >= settled, DRAIN_TIMEOUT, 0.05)
            last_settled = stack.database.scalar("SELECT extract(epoch FROM max(settled_at)) FROM receipts")
            result[f"{phase}_per_s"] = len(ids) / posted["seconds"]
            result[f"{phase}_applied_per_s"] = len(ids) / (last_settled - posted["started"])
            result[f"{phase}_p50_ms"], result[f"{phase}_p99_ms"] = posted["p50_ms"], posted["p99_ms"]
        result["cpu_us_per_receipt"] = (stack.serve.cpu_seconds() - cpu_before) / n * 1e6
        result["postgres_cpu_s"] = postgres_cpu_seconds() - postgres_before
        applied, delivered = (float(value) for value in stack.database.sql(
            "SELECT (SELECT count(*) FROM receipts WHERE outcome = 'applied'),"
            " (SELECT count(*) FROM messages WHERE delivery_status = 'delivered')").split("|"))
        if applied != n or delivered != n:
            raise StackError(f"{scenario.name}: {n} receipts, {applied:.0f} applied, {delivered:.0f} delivered")
    except BaseException:
        stack.print_logs()
        raise
    finally:
        codes = stack.close()
    if codes.get("serve", -1) != 0:
        raise StackError(f"{scenario.name}: serve exited {codes.get('serve')} on SIGTERM")
    return result


def pause_database(stack: Stack, seconds: int) -> int:
    """Holds every statement on `messages` for `seconds`, as a database that stopped answering would;
    returns the POSTs the provider received meanwhile (what was claimed before may still go out)."""
    holder = subprocess.Popen(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", stack.database.url, "-c",
         f"BEGIN; LOCK TABLE messages IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep({seconds}); COMMIT;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until("the lock is held", lambda: holder.poll() is not None or stack.database.scalar(
        "SELECT count(*) FROM pg_locks WHERE relation = 'messages'::regclass AND mode = 'AccessExclusiveLock'"
        " AND granted") > 0, 30, 0.01)
    before = stack.provider_stats()["received"]
    _, error = holder.communicate(timeout=seconds + 60)
    if holder.returncode != 0:
        raise StackError(f"the lock that pauses the database failed: {error.strip()}")
    return stack.provider_stats()["received"] - before


def provider_figures(stats: dict[str, Any]) -> dict[str, Any]:
    """What the stand-in's GET /stats says of a run, under the names of the tables."""
    if "max_in_any_second" not in stats:
        raise StackError("this binary's stand-in provider predates arrivals per second: run these scenarios on "
                         "a newer build (`--scenarios drain` runs an older one)")
    return {
        "posts": stats["received"],
        "accepted": stats["accepted"],
        "throttled": stats["throttled"],
        "throttled_share": stats["throttled"] / max(1, stats["received"]),
        "max_in_any_second": stats["max_in_any_second"],
        "posts_per_second": stats["posts_per_second"],
        "keys_posted_twice": stats["keys_posted_more_than_once"],
        "duplicates": stats["duplicates"],
        "distinct_keys": stats["distinct_keys"],
    }


def check_ours(scenario: Scenario, result: dict[str, Any], n: int) -> None:
    """Fails the run on what the harness cannot trust; a missed target is not one of them."""
    name = scenario.name
    if result["sent"] + result["failed"] != n:
        raise StackError(f"{name}: {n} messages, {result['sent']:.0f} sent and {result['failed']:.0f} failed")
    if result["distinct_keys"] != n:
        raise StackError(f"{name}: {n} messages reached the provider under {result['distinct_keys']} keys")
    if result["duplicates"] != 0:
        raise StackError(f"{name}: {result['duplicates']} POSTs accepted a key already accepted")
    faults_injected = "--quota" in scenario.provider_args
    if not faults_injected and result["failed"] != 0:
        raise StackError(f"{name}: {result['failed']:.0f} messages failed with no fault injected")
    if result["throttled"] == 0 and result["keys_posted_twice"] != 0:
        raise StackError(f"{name}: {result['keys_posted_twice']} keys POSTed twice though no POST was refused")


def build_apalis() -> Path:
    """Builds load/apalis-baseline in release, in its own target dir (a few minutes the first time)."""
    print("building the apalis baseline (load/apalis-baseline; about 3 minutes the first time)", flush=True)
    done = subprocess.run(
        ["cargo", "build", "--release", "--locked", "--manifest-path", str(APALIS_MANIFEST),
         "--target-dir", str(APALIS_TARGET)],
        # Its storage's query macros read their shipped .sqlx data, not whatever DATABASE_URL names.
        env={**os.environ, "SQLX_OFFLINE": "true"},
    )
    if done.returncode != 0 or not APALIS_BINARY.is_file():
        raise StackError("building load/apalis-baseline failed (see cargo's output above)")
    return APALIS_BINARY


def run_baseline(scenario: Scenario, binary: Path, apalis: Path, scale: float) -> dict[str, Any]:
    """One run of apalis doing the job of `scenario.baseline_of`, on a database and stand-in of its own."""
    ours = BY_NAME[scenario.baseline_of or ""]
    n = ours.scaled(scale)
    stack = Stack(binary, {}, [*scenario.provider_args, "--auth-key", AUTH_KEY], replicas=0)
    try:
        done = subprocess.run(
            [str(apalis), "--webhook-url", f"{stack.provider_url}/hook", "--messages", str(n),
             "--concurrency", ours.serve_env["WEBHOOK_CONCURRENCY"]],
            env={**os.environ, "DATABASE_URL": stack.database.url, "WEBHOOK_AUTH_KEY": AUTH_KEY, "RUST_LOG": "warn"},
            capture_output=True,
            text=True,
            timeout=DRAIN_TIMEOUT,
        )
        if done.returncode != 0:
            raise StackError(f"{scenario.name}: apalis-baseline exited {done.returncode}: {done.stderr.strip()[-800:]}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        result: dict[str, Any] = {
            "messages": n,
            "messages_per_s": report["per_second"],
            "drain_s": report["seconds"],
            "enqueue_s": report["enqueue_seconds"],
            **provider_figures(stack.provider_stats()),
        }
    finally:
        stack.close()
    if result["distinct_keys"] != n:
        raise StackError(f"{scenario.name}: {n} jobs reached the provider under {result['distinct_keys']} keys")
    return result


def run(scenario: Scenario, binary: Path, apalis: Path | None, scale: float) -> dict[str, Any]:
    if scenario.runner is not None:
        return scenario.runner(scenario, binary, scale)
    if scenario.baseline_of is None:
        return run_ours(scenario, binary, scale)
    if apalis is None:
        raise StackError(f"{scenario.name} needs the apalis baseline built")
    return run_baseline(scenario, binary, apalis, scale)


def summary(scenario: Scenario, result: dict[str, Any]) -> str:
    """One line of progress for a run of `scenario`."""
    if scenario.rows is RECEIPTS_INGEST_ROWS:
        return (f"{result['batched_per_s']:,.0f} receipts/s in batches of {RECEIPT_BATCH:,}, "
                f"{result['single_per_s']:,.0f}/s one per request")
    line = f"{result['messages_per_s']:,.0f} messages/s"
    if "ratio_to_plain" in result:
        line += f", {result['ratio_to_plain']:.2f} of {scenario.compared_to}'s"
    if "outbox_empty_after_s" in result:
        line += (f"; outbox {result['outbox_depth_at_end']:,.0f} deep at the drain's end, empty "
                 f"{result['outbox_empty_after_s']:.2f} s after it")
    if scenario.rows is FLOW_ROWS:
        line += (f", {result['sent']:,.0f} sent, {result['failed']:,.0f} failed, most in one second "
                 f"{result['max_in_any_second']}, {result['throttled_share']:.1%} answered 429")
    return line


Runs = dict[str, list[dict[str, Any]]]


@dataclass(frozen=True)
class Target:
    scenario: str
    label: str
    # The figure from every scenario's runs; None when a scenario it needs was not run.
    figure: Callable[[Runs], float | None]
    comparison: str
    # The goal, from the --scale of the run (only a count of messages depends on it).
    goal: Callable[[float], float]
    format: str


def median_of(scenario: str, key: str, over: float = 1) -> Callable[[Runs], float | None]:
    """The median of `key` over the runs of `scenario`, divided by `over`."""
    return lambda runs: statistics.median(r[key] for r in runs[scenario]) / over if scenario in runs else None


def ours_over_apalis(scenario: str) -> Callable[[Runs], float | None]:
    """The median over runs of ours / apalis, run i against run i (measured a minute or two apart)."""
    baseline = f"{scenario}/apalis"

    def figure(runs: Runs) -> float | None:
        if scenario not in runs or baseline not in runs:
            return None
        pairs = zip(runs[scenario], runs[baseline])
        return statistics.median(ours["messages_per_s"] / theirs["messages_per_s"] for ours, theirs in pairs)

    return figure


def constant(value: float) -> Callable[[float], float]:
    return lambda _scale: value


TARGETS = (
    Target("latency-bound", "messages/s / 3,200 (64 connections / 20 ms)",
           median_of("latency-bound", "messages_per_s", over=LATENCY_BOUND_IDEAL), ">=", constant(0.90), "{:.3f}"),
    Target("latency-bound", "ours / apalis, messages/s", ours_over_apalis("latency-bound"), ">=", constant(1.5),
           "{:.2f}"),
    Target("instant-64", "messages/s", median_of("instant-64", "messages_per_s"), ">=", constant(10_000), "{:,.0f}"),
    Target("instant-64", "messages/s / database ceiling", median_of("instant-64", "ratio"), ">=", constant(0.45),
           "{:.2f}"),
    Target("instant-64", "ours / apalis, messages/s", ours_over_apalis("instant-64"), ">=", constant(1.5), "{:.2f}"),
    Target("rate-limit", "most POSTs in any one second", median_of("rate-limit", "max_in_any_second"), "<=",
           constant(220), "{:,.0f}"),
    Target("rate-limit", "average rate (sent/s)", median_of("rate-limit", "messages_per_s"), ">=", constant(180),
           "{:,.1f}"),
    Target("quota-429", "sent", median_of("quota-429", "sent"), "==",
           lambda scale: BY_NAME["quota-429"].scaled(scale), "{:,.0f}"),
    Target("quota-429", "failed", median_of("quota-429", "failed"), "==", constant(0), "{:,.0f}"),
    Target("quota-429", "share of POSTs answered 429", median_of("quota-429", "throttled_share"), "<=",
           constant(0.25), "{:.3f}"),
    Target("receipts-drain", "messages/s / instant-64's, same run", median_of("receipts-drain", "ratio_to_plain"),
           ">=", constant(0.70), "{:.2f}"),
    Target("receipts-drain", "outbox empty, s after the drain's end", median_of("receipts-drain",
           "outbox_empty_after_s"), "<=", constant(OUTBOX_KEEPS_UP_S), "{:.2f}"),
    Target("mixed-drain", "messages/s / instant-64's, same run", median_of("mixed-drain", "ratio_to_plain"), ">=",
           constant(0.90), "{:.2f}"),
    Target("receipts-ingest", "receipts/s, batches of 1,000", median_of("receipts-ingest", "batched_per_s"), ">=",
           constant(10_000), "{:,.0f}"),
    Target("receipts-ingest", "receipts/s, one per request", median_of("receipts-ingest", "single_per_s"), ">=",
           constant(2_000), "{:,.0f}"),
    Target("backlog-pause", "serve peak RSS (MB)", median_of("backlog-pause", "peak_rss_mb"), "<=",
           constant(100), "{:.1f}"),
)
COMPARISONS = {">=": ("≥", float.__ge__), "<=": ("≤", float.__le__), "==": ("=", float.__eq__)}


def verdicts(runs: Runs, scale: float) -> list[dict[str, Any]]:
    """Each target whose scenarios ran: its median figure, the goal, and PASS or FAIL."""
    judged = []
    for target in TARGETS:
        value = target.figure(runs)
        if value is None:
            continue
        goal = target.goal(scale)
        met = COMPARISONS[target.comparison][1](float(value), float(goal))
        judged.append({"scenario": target.scenario, "target": target.label, "median": value,
                       "comparison": target.comparison, "goal": goal, "verdict": "PASS" if met else "FAIL",
                       "format": target.format})
    return judged


def verdict_table(judged: list[dict[str, Any]]) -> str:
    lines = [f"{'scenario':16}{'target':46}{'median':>12}   {'goal':12}verdict"]
    for row in judged:
        value, goal = (row["format"].format(row[key]) for key in ("median", "goal"))
        sign = COMPARISONS[row["comparison"]][0]
        lines.append(f"{row['scenario']:16}{row['target']:46}{value:>12}   {sign} {goal:10}{row['verdict']}")
    return "\n".join(lines)
