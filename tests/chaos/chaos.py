#!/usr/bin/env python3
"""Chaos run: three `serve` replicas on one Postgres, the stand-in provider failing 10% of requests
with latency and reporting delivery receipts, a status webhook receiver failing 10% of requests, N
messages, and a random replica SIGKILLed every 1-3 s and restarted at once, until every message is sent,
has its final delivery state and the status events outbox is drained.

The provider reports each accepted message `delivered` or `undelivered` (20% undelivered), sends 10%
of receipts twice and 10% before its 202 answer, to one replica's `POST /receipts` (it retries a receipt
the replica does not take, so a kill loses none), and lists what it reported at `GET /receipts`. The
receiver checks each Standard Webhooks signature with the standard library alone (not the service's
code) and records events by `webhook-id`.

At the end it asserts and prints: every message `sent` (none lost, none left `sending`), how many keys
were POSTed more than once and why, how many messages the provider (which deduplicates by
Idempotency-Key) delivered twice (must be 0); per message, one final delivery state equal to what the
provider reported, one applied receipt and none left unsettled; and that the receiver saw, per message,
exactly one distinct `message.sent` and one distinct final event matching the report (repeats of one
`webhook-id` allowed), the final one only after the `message.sent` was acknowledged.

Usage: python3 tests/chaos/chaos.py [--messages 20000] [--binary target/debug/insider-messaging]
Needs Postgres at TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres) and psql.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REPLICAS = 3
FINAL_EVENTS = {"message.delivered": "delivered", "message.undelivered": "undelivered"}
# Standard Webhooks: a receiver refuses a timestamp further than this from its clock.
TIMESTAMP_TOLERANCE_SECONDS = 300


def psql(url, sql):
    out = subprocess.run(["psql", url, "-XAtq", "-c", sql], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def rows(url, sql):
    return [line.split("|") for line in psql(url, sql).splitlines()]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


class StatusReceiver:
    """The sender's status webhook endpoint: verifies each signature independently, answers 500 to a
    share of requests (so the service retries), and records what it acknowledged by `webhook-id`."""

    def __init__(self, secret, fail_rate):
        self.key = base64.b64decode(secret.removeprefix("whsec_"))
        self.fail_rate = fail_rate
        self.lock = threading.Lock()
        self.posts = 0
        self.failed = 0
        self.bad_signatures = 0
        # webhook-id -> {"type", "message", "body", "posts", "first_seen", "acked"}
        self.events = {}
        self.changed_bodies = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                self.respond(receiver.receive(self.headers, body))

            def respond(self, code):
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                # A replica killed mid-request resets its connection: expected here, not worth a traceback.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def verified(self, headers, body):
        webhook_id = headers.get("webhook-id")
        timestamp = headers.get("webhook-timestamp", "")
        if not webhook_id or not timestamp.isdigit():
            return False
        if abs(time.time() - int(timestamp)) > TIMESTAMP_TOLERANCE_SECONDS:
            return False
        signed = f"{webhook_id}.{timestamp}.".encode() + body
        expected = base64.b64encode(hmac.new(self.key, signed, hashlib.sha256).digest()).decode()
        offered = [part.split(",", 1)[1] for part in headers.get("webhook-signature", "").split()
                   if part.startswith("v1,")]
        return any(hmac.compare_digest(expected, signature) for signature in offered)

    def receive(self, headers, body):
        now = time.monotonic()
        with self.lock:
            self.posts += 1
            if not self.verified(headers, body):
                self.bad_signatures += 1
                return 401
            webhook_id = headers["webhook-id"]
            event = self.events.get(webhook_id)
            if event is None:
                payload = json.loads(body)
                event = self.events[webhook_id] = {
                    "type": payload["type"], "message": payload["data"]["id"], "body": body,
                    "posts": 0, "first_seen": now, "acked": None,
                }
            elif event["body"] != body:
                self.changed_bodies += 1
            event["posts"] += 1
            if random.random() < self.fail_rate:
                self.failed += 1
                return 500
            if event["acked"] is None:
                event["acked"] = now
            return 204

    def stop(self):
        self.server.shutdown()


def check_deliveries(db_url, reported, messages):
    """Per message: one final delivery state equal to what the provider reported, from one applied
    receipt, none of its receipts left unsettled. Returns (problems, counts)."""
    problems = []
    report_of = {delivery["messageId"]: delivery for delivery in reported}
    # One pass over receipts (no index on their message_id): a subquery per message would take minutes.
    state = rows(db_url, "SELECT m.id, m.provider_message_id, coalesce(m.delivery_status, ''), coalesce(a.n, 0) "
                         "FROM messages m LEFT JOIN (SELECT message_id, count(*) n FROM receipts "
                         "WHERE outcome = 'applied' GROUP BY message_id) a ON a.message_id = m.id")
    mismatched = unapplied = 0
    status_of_message = {}
    for message_id, provider_id, delivery_status, applied in state:
        report = report_of.get(provider_id)
        if report is None or report["status"] != delivery_status:
            mismatched += 1
        else:
            status_of_message[message_id] = delivery_status
        if applied != "1":
            unapplied += 1
    if len(report_of) != messages:
        problems.append(f"the provider reported {len(report_of)} messages, expected {messages}")
    if mismatched:
        problems.append(f"{mismatched} messages' delivery state differs from the provider's report")
    if unapplied:
        problems.append(f"{unapplied} messages do not have exactly one applied receipt")
    unsettled = int(psql(db_url, "SELECT count(*) FROM receipts WHERE outcome NOT IN ('applied', 'ignored')"))
    if unsettled:
        problems.append(f"{unsettled} receipts pending, unmatched or ambiguous")
    unacknowledged = sum(1 for delivery in reported if delivery["acknowledged"] != delivery["copies"])
    if unacknowledged:
        problems.append(f"{unacknowledged} receipts the service never took")
    return problems, status_of_message, mismatched


def check_events(receiver, status_of_message):
    """Per message: exactly one distinct message.sent and one distinct final event matching the
    provider's report, the final one first seen after the sent one was acknowledged."""
    problems = []
    by_message = defaultdict(lambda: defaultdict(list))
    for event in receiver.events.values():
        if event["acked"] is not None:
            by_message[event["message"]][event["type"]].append(event)
    wrong = out_of_order = 0
    for message_id, reported_status in status_of_message.items():
        events = by_message.get(message_id, {})
        sent = events.get("message.sent", [])
        finals = [event for kind in FINAL_EVENTS for event in events.get(kind, [])]
        if (len(sent) != 1 or len(finals) != 1 or FINAL_EVENTS[finals[0]["type"]] != reported_status
                or set(events) - {"message.sent", *FINAL_EVENTS}):
            wrong += 1
        elif finals[0]["first_seen"] < sent[0]["acked"]:
            out_of_order += 1
    strays = len(set(by_message) - set(status_of_message))
    if wrong:
        problems.append(f"{wrong} messages without exactly one message.sent and one matching final event")
    if out_of_order:
        problems.append(f"{out_of_order} final events arrived before their message.sent was acknowledged")
    if strays:
        problems.append(f"events for {strays} messages whose delivery state does not match")
    if receiver.bad_signatures:
        problems.append(f"{receiver.bad_signatures} requests failed signature verification")
    if receiver.changed_bodies:
        problems.append(f"{receiver.changed_bodies} repeats of a webhook-id carried another body")
    return problems, len(status_of_message) - wrong - out_of_order


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--binary", default="target/debug/insider-messaging")
    parser.add_argument("--timeout", type=int, default=600, help="seconds before giving up")
    args = parser.parse_args()

    name = f"chaos_{int(time.time())}"
    base = ADMIN_URL.rsplit("/", 1)[0]
    db_url = f"{base}/{name}"
    psql(ADMIN_URL, f"CREATE DATABASE {name}")
    # The replicas crash here, Postgres does not: a commit need not wait for its WAL flush, which on a
    # shared 2-core machine bounds a run that commits once per receipt and per status event delivered.
    # What one session committed is visible to the others at once all the same, so no check is weakened.
    psql(ADMIN_URL, f"ALTER DATABASE {name} SET synchronous_commit = off")
    logs = tempfile.mkdtemp(prefix="insider-chaos-")
    procs = {}
    provider = None
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    callback_key = base64.b64encode(os.urandom(24)).decode()
    receiver = StatusReceiver(secret, fail_rate=0.1)
    try:
        subprocess.run([args.binary, "migrate"], env={**os.environ, "DATABASE_URL": db_url, "RUST_LOG": "warn"},
                       check=True)
        psql(db_url, f"INSERT INTO messages (phone_number, content) "
                     f"SELECT '+9055' || lpad(i::text, 8, '0'), 'chaos ' || i FROM generate_series(1, {args.messages}) i")

        # Fixed ports, so a replica restarted after a kill is found where it was; receipts go to slot 0.
        ports = [free_port() for _ in range(REPLICAS)]
        provider_port = free_port()
        provider_log = open(os.path.join(logs, "provider.log"), "ab")
        provider = subprocess.Popen(
            [args.binary, "mock-provider", "--addr", f"127.0.0.1:{provider_port}",
             "--fail-rate", "0.1", "--latency", "20ms",
             "--receipts-url", f"http://127.0.0.1:{ports[0]}/receipts", "--receipt-delay", "500ms",
             "--undelivered-rate", "0.2", "--duplicate-receipt-rate", "0.1", "--early-receipt-rate", "0.1"],
            env={**os.environ, "RUST_LOG": "warn", "MOCK_PROVIDER_RECEIPTS_KEY": callback_key},
            stdout=provider_log, stderr=provider_log)
        provider_url = f"http://127.0.0.1:{provider_port}"
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "WEBHOOK_URL": f"{provider_url}/sms",
            "INTERVAL": "50ms",
            "BATCH_SIZE": "100",
            "LEASE": "10s",
            "WEBHOOK_TIMEOUT": "2s",
            "BACKOFF_MIN": "200ms",
            "BACKOFF_MAX": "2s",
            "MAX_RETRIES": "20",
            "AUTOSTART": "true",
            "CALLBACK_AUTH_KEY": callback_key,
            "STATUS_WEBHOOK_URL": receiver.url,
            "STATUS_WEBHOOK_SECRET": secret,
            "RUST_LOG": "warn",
        }
        env.pop("REDIS_URL", None)

        def start(slot):
            log = open(os.path.join(logs, f"replica-{slot}.log"), "ab")
            procs[slot] = subprocess.Popen([args.binary, "serve"], env={**env, "HTTP_ADDR": f"127.0.0.1:{ports[slot]}"},
                                           stdout=log, stderr=log)

        for slot in range(REPLICAS):
            start(slot)

        kills = 0
        started = time.monotonic()
        all_sent_after = None
        next_kill = started + random.uniform(1, 3)
        while True:
            now = time.monotonic()
            unsent, undelivered, outbox = (int(n) for n in rows(db_url, (
                "SELECT (SELECT count(*) FROM messages WHERE status <> 'sent'), "
                "(SELECT count(*) FROM messages WHERE delivery_status IS DISTINCT FROM 'delivered' "
                " AND delivery_status IS DISTINCT FROM 'undelivered'), "
                "(SELECT count(*) FROM status_events WHERE status = 'pending')"))[0])
            if unsent == 0 and all_sent_after is None:
                all_sent_after = now - started
            if unsent == 0 and undelivered == 0 and outbox == 0:
                break
            if now - started > args.timeout:
                raise SystemExit(f"chaos: after {args.timeout}s {unsent} messages not sent, {undelivered} without a "
                                 f"final delivery state, {outbox} status events pending (logs in {logs})")
            if now >= next_kill:
                slot = random.randrange(REPLICAS)
                procs[slot].send_signal(signal.SIGKILL)
                procs[slot].wait()
                kills += 1
                start(slot)
                next_kill = now + random.uniform(1, 3)
            time.sleep(0.2)
        elapsed = time.monotonic() - started

        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        exits = [proc.wait(timeout=30) for proc in procs.values()]

        stats = get_json(f"{provider_url}/stats")
        reported = get_json(f"{provider_url}/receipts")
        by_status = dict(rows(db_url, "SELECT status, count(*) FROM messages GROUP BY status"))
        accepted_twice = int(psql(db_url, "SELECT count(*) FROM (SELECT message_id FROM message_attempts "
                                          "WHERE outcome = 'accepted' GROUP BY message_id HAVING count(*) > 1) d"))
        receipts = dict(rows(db_url, "SELECT outcome, count(*) FROM receipts GROUP BY outcome"))
        early = int(psql(db_url, "SELECT count(*) FROM receipts r JOIN messages m ON m.id = r.message_id "
                                 "WHERE r.received_at < m.sent_at"))
        outbox = dict(rows(db_url, "SELECT type || ' ' || status, count(*) FROM status_events GROUP BY 1"))
        delivery_problems, status_of_message, mismatched = check_deliveries(db_url, reported, args.messages)
        event_problems, events_right = check_events(receiver, status_of_message)
        reported_statuses = Counter(delivery["status"] for delivery in reported)
        repeats = sum(event["posts"] for event in receiver.events.values()) - len(receiver.events) - receiver.failed
        retried_keys = stats["keys_posted_more_than_once"]
        table = [
            ("messages", args.messages),
            ("sent", int(by_status.get("sent", 0))),
            ("left sending", int(by_status.get("sending", 0))),
            ("left pending", int(by_status.get("pending", 0))),
            ("failed", int(by_status.get("failed", 0))),
            ("replica SIGKILLs", kills),
            ("seconds until every message was sent", round(all_sent_after or 0, 1)),
            ("seconds until every delivery state was final and the outbox drained", round(elapsed, 1)),
            ("POSTs received by the provider", stats["received"]),
            ("answered 5xx (injected)", stats["failed"]),
            ("keys POSTed more than once", retried_keys),
            ("  of which accepted twice (a kill or an expired lease between 202 and commit)", stats["duplicates"]),
            ("  accepted twice per the attempt history", accepted_twice),
            ("max POSTs for one key", stats["max_posts_per_key"]),
            ("messages the deduplicating provider delivered", stats["accepted"] - stats["duplicates"]),
            ("messages the deduplicating provider delivered twice", stats["accepted"] - stats["duplicates"] - args.messages),
            ("receipts reported delivered / undelivered by the provider",
             f"{reported_statuses['delivered']} / {reported_statuses['undelivered']}"),
            ("receipt POSTs (copies and retries included) / not taken (kills) / given up",
             f"{stats['receipts_sent']} / {stats['receipts_refused']} / {stats['receipts_given_up']}"),
            ("receipts stored: applied / ignored (repeats) / left pending, unmatched or ambiguous",
             f"{receipts.get('applied', 0)} / {receipts.get('ignored', 0)} / "
             f"{sum(int(n) for outcome, n in receipts.items() if outcome not in ('applied', 'ignored'))}"),
            ("receipts stored before their message's 202 was answered", early),
            ("messages whose delivery state differs from the provider's report", mismatched),
            ("status events in the outbox (type status: count)", ", ".join(f"{k}: {v}" for k, v in sorted(outbox.items()))),
            ("status webhook POSTs received / answered 500 (injected) / bad signatures",
             f"{receiver.posts} / {receiver.failed} / {receiver.bad_signatures}"),
            ("distinct webhook-ids acknowledged", sum(1 for e in receiver.events.values() if e["acked"] is not None)),
            ("  repeats of an acknowledged webhook-id (a kill or an expired lease between 2xx and record)", repeats),
            ("messages with one message.sent and one matching final event, in order", events_right),
            ("replica exit codes after SIGTERM", exits),
        ]
        print("\n| chaos run | value |\n| --- | --- |")
        for label, value in table:
            print(f"| {label} | {value} |")

        problems = []
        if int(by_status.get("sent", 0)) != args.messages:
            problems.append("not every message is sent")
        # Each key accepted twice needs a kill to explain it: at most BATCH_SIZE sends were in flight per kill.
        if stats["duplicates"] > kills * 100:
            problems.append("more double acceptances than kills can explain")
        delivered = stats["accepted"] - stats["duplicates"]
        if delivered != args.messages:
            problems.append(f"the provider delivered {delivered} distinct messages, expected {args.messages}")
        problems += delivery_problems + event_problems
        if any(kind_status.split()[1] != "delivered" for kind_status in outbox):
            problems.append("status events not delivered")
        if any(code != 0 for code in exits):
            problems.append("a replica did not exit 0 on SIGTERM")
        if problems:
            raise SystemExit("chaos: FAILED: " + "; ".join(problems) + f" (logs in {logs})")
        print(f"\nchaos: passed ({kills} kills, 0 lost, 0 delivered twice, every delivery state and status event "
              f"as the provider reported, once); replica logs in {logs}")
    finally:
        for proc in list(procs.values()) + ([provider] if provider else []):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        receiver.stop()
        psql(ADMIN_URL, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    sys.exit(main())
