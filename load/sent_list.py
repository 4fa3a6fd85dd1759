#!/usr/bin/env python3
"""`make bench-sent-list`: the sent list and the claim over a big table.

Fills a fresh database the way a long-running queue looks: --sent (default 1,000,000) sent messages,
their send times spread over 27.8 hours, and --pending (default 10,000) pending ones; then VACUUM
ANALYZE, as autovacuum would have done. Then it:

1. prints EXPLAIN (ANALYZE, BUFFERS) of the claim (in a transaction it rolls back) and of a sent-list
   page deep in the table: both must be index scans on their partial indexes;
2. drives `GET /messages/sent?limit=20&cursor=<a random position in the table>` with oha (any page,
   since every request starts at a random send time) at --rate requests/s for --seconds, then as fast
   as 4 connections go, and prints rate, p50/p90/p99 and errors.

`serve` runs with sending stopped, so the table stays as filled. `--plans-only` stops after step 1
(CI runs it small, as a guard on the plans).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import ROOT, Http, Stack, StackError, bind, find_binary, machine, oha, statement  # noqa: E402

# Send times fill [FIRST_SENT, FIRST_SENT + SPAN) seconds since the epoch (2026-11-18, 27.8 hours), so
# that a cursor of `17950` and eleven random digits (microseconds) lands anywhere in the table.
FIRST_SENT = 1_795_000_000
SPAN = 100_000
CURSOR_REGEX = "17950[0-9]{11}_[0-9a-f]{8}-0000-4000-8000-000000000000"


def fill(stack: Stack, sent: int, pending: int) -> float:
    started = time.monotonic()
    stack.database.sql(
        "INSERT INTO messages (phone_number, content, status, attempts, provider_message_id, sent_at, created_at,"
        " updated_at)"
        " SELECT '+90555' || lpad((i % 10000000)::text, 7, '0'), 'sent ' || i, 'sent', 1, gen_random_uuid()::text,"
        f" t, t - interval '1 second', t FROM generate_series(1, {sent}) i,"
        f" LATERAL (SELECT to_timestamp({FIRST_SENT} + i::float8 / {sent} * {SPAN})) AS at(t)"
    )
    stack.database.sql(
        "INSERT INTO messages (phone_number, content)"
        f" SELECT '+90555' || lpad(i::text, 7, '0'), 'pending ' || i FROM generate_series(1, {pending}) i"
    )
    stack.database.sql("VACUUM ANALYZE messages")
    return time.monotonic() - started


def claim_statement() -> str:
    return bind(statement("postgres/claim_due.sql"), {1: "500", 2: "'explain'", 3: "30", 4: "NULL", 5: "NULL", 6: "NULL", 7: "600"})


def sent_page(at: float) -> str:
    """A next page of 21 sent messages after `at` (seconds since the epoch), as the service reads one:
    src/store/list.rs fills the file in with the sent status and its sort column, sent_at."""
    page = statement("list/next_page.sql").replace("{status}", "sent").replace("{sort_column}", "sent_at")
    return bind(page, {1: "21", 2: f"to_timestamp({at})", 3: "'00000000-0000-4000-8000-000000000000'"})


def explain(stack: Stack) -> dict[str, str]:
    """Each plan, checked to read its partial index (a sequential scan here is what a big table punishes)."""
    plans = {}
    for name, index, sql in [
        ("claim (500 rows)", "messages_pending_due_idx",
         f"BEGIN; EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {claim_statement()}; ROLLBACK"),
        ("sent list, a page deep in the table", "messages_sent_idx",
         f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sent_page(FIRST_SENT + SPAN // 10)}"),
    ]:
        plan = stack.database.sql(sql)
        # Seq Scans of the small side tables (paused campaigns, opt-outs) are cheap; one of messages is not.
        if not re.search(rf"Index (Only )?Scan( Backward)? using {index}\b", plan) or re.search(r"Seq Scan on messages\b", plan):
            raise StackError(f"{name} no longer reads {index}:\n{plan}")
        plans[name] = plan
    return plans


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", help="insider-messaging to run (default target/release/insider-messaging)")
    parser.add_argument("--sent", type=int, default=1_000_000, help="sent rows (default 1000000)")
    parser.add_argument("--pending", type=int, default=10_000, help="pending rows (default 10000)")
    parser.add_argument("--rate", type=int, default=500, help="requests/s of the paced run (default 500)")
    parser.add_argument("--seconds", type=float, default=20, help="length of each run (default 20)")
    parser.add_argument("--plans-only", action="store_true", help="check the plans, skip the HTTP runs")
    args = parser.parse_args()

    try:
        binary = find_binary(args.binary)
        about = machine()
        print(f"sent list over {args.sent:,} sent and {args.pending:,} pending messages", flush=True)
        print(f"machine: {about['cpu']}, {about['cores']} cores, PostgreSQL {about['postgres']}; commit {about['commit']}")
        stack = Stack(binary, {"AUTOSTART": "false"})
        try:
            print(f"filled in {fill(stack, args.sent, args.pending):.1f}s", flush=True)
            plans = explain(stack)
            for name, plan in plans.items():
                print(f"\nEXPLAIN ANALYZE, {name}:\n{plan}")
            if args.plans_only:
                print("\nboth read their partial index")
                return 0
            url = f"{stack.url}/messages/sent\\?limit=20&cursor={CURSOR_REGEX}"
            status, page = Http(stack.url).request(
                "GET", f"/messages/sent?limit=20&cursor={FIRST_SENT + SPAN // 2}000000_{'0' * 8}-0000-4000-8000-{'0' * 12}"
            )
            if status != 200 or len(page["items"]) != 20:
                raise StackError(f"a page in the middle of the table answered {status} with {page}")
            runs = {
                f"paced, {args.rate}/s": oha(url, args.seconds, rate=args.rate, random_url=True),
                "as fast as 4 connections go": oha(url, args.seconds, connections=4, random_url=True),
            }
        finally:
            stack.close()
    except StackError as error:
        print(f"bench-sent-list failed: {error}", file=sys.stderr)
        return 1

    print(f"\nGET /messages/sent?limit=20&cursor=<random>, {args.sent:,} sent rows, {args.seconds:g}s each")
    print(f"{'':30}{'requests/s':>12}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}")
    for name, run in runs.items():
        print(
            f"{name:30}{run['rate']:>12,.0f}{run['p50_ms']:>9.2f}{run['p90_ms']:>9.2f}{run['p99_ms']:>9.2f}"
            f"{run['max_ms']:>9.1f}{run['errors']:>8}"
        )
    out = ROOT / "target" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"sent-list-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"machine": about, "args": vars(args), "plans": plans, "runs": runs}, indent=2) + "\n")
    print(f"\nwritten to {path.relative_to(ROOT)}")
    return 0 if all(run["errors"] == 0 for run in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
