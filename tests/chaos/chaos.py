#!/usr/bin/env python3
"""Chaos run: three `serve` replicas on one Postgres, the stand-in provider failing 10% of requests
with latency, N messages, and a random replica SIGKILLed every 1-3 s and restarted at once.

At the end it asserts and prints: every message `sent` (none lost, none left `sending`), how many
keys were POSTed more than once and why, and how many messages the provider (which deduplicates by
Idempotency-Key) delivered twice: that must be 0.

Usage: python3 tests/chaos/chaos.py [--messages 20000] [--binary target/debug/insider-messaging]
Needs Postgres at TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres) and psql.
"""

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REPLICAS = 3


def psql(url, sql):
    out = subprocess.run(["psql", url, "-XAtq", "-c", sql], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


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
    logs = tempfile.mkdtemp(prefix="insider-chaos-")
    procs = {}
    provider = None
    try:
        subprocess.run([args.binary, "migrate"], env={**os.environ, "DATABASE_URL": db_url, "RUST_LOG": "warn"},
                       check=True)
        psql(db_url, f"INSERT INTO messages (phone_number, content) "
                     f"SELECT '+9055' || lpad(i::text, 8, '0'), 'chaos ' || i FROM generate_series(1, {args.messages}) i")

        provider_port = free_port()
        provider = subprocess.Popen(
            [args.binary, "mock-provider", "--addr", f"127.0.0.1:{provider_port}",
             "--fail-rate", "0.1", "--latency", "20ms"],
            env={**os.environ, "RUST_LOG": "warn"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        provider_url = f"http://127.0.0.1:{provider_port}"
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "WEBHOOK_URL": f"{provider_url}/sms",
            "HTTP_ADDR": "127.0.0.1:0",
            "INTERVAL": "50ms",
            "BATCH_SIZE": "100",
            "LEASE": "10s",
            "WEBHOOK_TIMEOUT": "2s",
            "BACKOFF_MIN": "200ms",
            "BACKOFF_MAX": "2s",
            "MAX_RETRIES": "20",
            "AUTOSTART": "true",
            "RUST_LOG": "warn",
        }
        env.pop("REDIS_URL", None)

        def start(slot):
            log = open(os.path.join(logs, f"replica-{slot}.log"), "ab")
            procs[slot] = subprocess.Popen([args.binary, "serve"], env=env, stdout=log, stderr=log)

        for slot in range(REPLICAS):
            start(slot)

        kills = 0
        started = time.monotonic()
        next_kill = started + random.uniform(1, 3)
        while True:
            now = time.monotonic()
            remaining = int(psql(db_url, "SELECT count(*) FROM messages WHERE status <> 'sent'"))
            if remaining == 0:
                break
            if now - started > args.timeout:
                raise SystemExit(f"chaos: {remaining} messages not sent after {args.timeout}s (logs in {logs})")
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
        by_status = dict(
            line.split("|") for line in psql(db_url, "SELECT status, count(*) FROM messages GROUP BY status").splitlines()
        )
        accepted_twice = int(psql(db_url, "SELECT count(*) FROM (SELECT message_id FROM message_attempts "
                                          "WHERE outcome = 'accepted' GROUP BY message_id HAVING count(*) > 1) d"))
        retried_keys = stats["keys_posted_more_than_once"]
        rows = [
            ("messages", args.messages),
            ("sent", int(by_status.get("sent", 0))),
            ("left sending", int(by_status.get("sending", 0))),
            ("left pending", int(by_status.get("pending", 0))),
            ("failed", int(by_status.get("failed", 0))),
            ("replica SIGKILLs", kills),
            ("seconds", round(elapsed, 1)),
            ("POSTs received by the provider", stats["received"]),
            ("answered 5xx (injected)", stats["failed"]),
            ("keys POSTed more than once", retried_keys),
            ("  of which accepted twice (a kill or an expired lease between 202 and commit)", stats["duplicates"]),
            ("  accepted twice per the attempt history", accepted_twice),
            ("max POSTs for one key", stats["max_posts_per_key"]),
            ("messages the deduplicating provider delivered", stats["accepted"] - stats["duplicates"]),
            ("messages the deduplicating provider delivered twice", stats["accepted"] - stats["duplicates"] - args.messages),
            ("replica exit codes after SIGTERM", exits),
        ]
        print("\n| chaos run | value |\n| --- | --- |")
        for label, value in rows:
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
        if any(code != 0 for code in exits):
            problems.append("a replica did not exit 0 on SIGTERM")
        if problems:
            raise SystemExit("chaos: FAILED: " + "; ".join(problems) + f" (logs in {logs})")
        print(f"\nchaos: passed ({kills} kills, 0 lost, 0 delivered twice); replica logs in {logs}")
    finally:
        for proc in list(procs.values()) + ([provider] if provider else []):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        psql(ADMIN_URL, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    sys.exit(main())
