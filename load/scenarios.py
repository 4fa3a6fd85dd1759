#!/usr/bin/env python3
"""`make load-baseline`, `make load-spike`: the API under load while the dispatcher works.

Two streams run at once, each driven by oha at a fixed rate (latency corrected for coordinated omission):
enqueues (`POST /messages`) and sent-list reads (`GET /messages/sent`, the first page).

- baseline: --seconds (default 60) at --enqueue-rate (default 100/s) and --read-rate (default 200/s);
- spike: 10 s at those rates, then 30 s at ten times both, then 10 s back at them: each phase is
  reported on its own, so the last one shows whether the service came back.

Unless --url names a running service (with --api-key when it has one), it starts its own stack: a
fresh Postgres database, the stand-in provider and `serve` sending with INTERVAL=100ms and
BATCH_SIZE=200, so the sent list grows while it is read. Each phase prints, per stream, the rate
reached, p50/p90/p99/max latency and errors (non-2xx answers and connection errors); any error fails
the run.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import ROOT, Stack, StackError, find_binary, machine, oha  # noqa: E402

ENQUEUE_BODY = json.dumps({"to": "+905551111111", "content": "Insider - Project (load)"})
SPIKE_FACTOR = 10


def phase(url: str, seconds: float, enqueue_rate: float, read_rate: float, api_key: str | None) -> dict:
    """Both streams at once for `seconds`."""
    results: dict[str, dict] = {}
    failures: list[BaseException] = []

    def stream(name: str, **kwargs) -> None:
        try:
            results[name] = oha(seconds=seconds, connections=32, api_key=api_key, **kwargs)
        except BaseException as error:  # reported after both threads end
            failures.append(error)

    threads = [
        threading.Thread(target=stream, args=("POST /messages",),
                         kwargs={"url": f"{url}/messages", "rate": enqueue_rate, "method": "POST", "body": ENQUEUE_BODY}),
        threading.Thread(target=stream, args=("GET /messages/sent",),
                         kwargs={"url": f"{url}/messages/sent", "rate": read_rate}),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return results


def print_phase(name: str, results: dict) -> None:
    print(f"\n{name}")
    print(f"  {'':22}{'requests':>10}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}")
    for stream, run in results.items():
        print(
            f"  {stream:22}{run['requests']:>10,}{run['rate']:>9,.0f}{run['p50_ms']:>9.2f}{run['p90_ms']:>9.2f}"
            f"{run['p99_ms']:>9.2f}{run['max_ms']:>9.1f}{run['errors']:>8}"
        )
        if run["errors"]:
            print(f"  {'':22}statuses {run['statuses']}, connection errors {run['error_kinds']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["baseline", "spike"])
    parser.add_argument("--url", help="a running service (default: start one)")
    parser.add_argument("--api-key", help="its API_KEY, sent as X-API-Key")
    parser.add_argument("--binary", help="insider-messaging to run (default target/release/insider-messaging)")
    parser.add_argument("--enqueue-rate", type=float, default=100, help="POST /messages per second (default 100)")
    parser.add_argument("--read-rate", type=float, default=200, help="GET /messages/sent per second (default 200)")
    parser.add_argument("--seconds", type=float, default=60, help="length of the baseline (default 60)")
    args = parser.parse_args()

    if args.scenario == "baseline":
        plan = [(f"baseline, {args.seconds:g}s", args.seconds, 1)]
    else:
        plan = [("before the spike, 10s", 10, 1), (f"spike, {SPIKE_FACTOR}x for 30s", 30, SPIKE_FACTOR),
                ("after the spike, 10s", 10, 1)]
    stack = None
    try:
        if args.url:
            url = args.url.rstrip("/")
        else:
            stack = Stack(find_binary(args.binary), {"INTERVAL": "100ms", "BATCH_SIZE": "200", "AUTOSTART": "true"})
            url = stack.url
        about = machine()
        print(f"{args.scenario}: {url}; enqueue {args.enqueue_rate:g}/s, read {args.read_rate:g}/s")
        print(f"machine: {about['cpu']}, {about['cores']} cores, PostgreSQL {about['postgres']}; commit {about['commit']}")
        report = {}
        for name, seconds, factor in plan:
            results = phase(url, seconds, args.enqueue_rate * factor, args.read_rate * factor, args.api_key)
            print_phase(name, results)
            report[name] = results
    except StackError as error:
        print(f"{args.scenario} failed: {error}", file=sys.stderr)
        return 1
    finally:
        if stack is not None:
            stack.close()
    out = ROOT / "target" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.scenario}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"machine": about, "args": vars(args), "phases": report}, indent=2) + "\n")
    print(f"\nwritten to {path.relative_to(ROOT)}")
    errors = sum(run["errors"] for results in report.values() for run in results.values())
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
