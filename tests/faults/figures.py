"""The figures of a fault, read from the database after the run, and the claim's profile during it.

Every figure but the POST counts comes from the `messages` rows: `created_at` (the enqueue's commit, the
database's clock) and `sent_at` (the provider's 202 in the service's hand, the service's clock; one
machine, one clock). The rows are bucketed by the tenth of a second, so each figure is good to 0.1 s.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "load"))
import stack  # noqa: E402
from stack import Database  # noqa: E402

TENTH = 10  # buckets a second
# Throughput is "back" when a window this long after the fault sends 90% of what was offered in it.
RECOVERY_WINDOW_S = 2.0
RECOVERED_SHARE = 0.9


def claim_statement() -> str:
    """The service's claim, as it runs it (src/store/postgres/claim_due.sql): the one place the harness
    reads it."""
    return stack.statement("postgres/claim_due.sql")


@dataclass
class Marks:
    """Wall-clock times (epoch seconds) of one cell's phases."""

    baseline_start: float
    fault_start: float
    fault_end: float
    load_end: float


def per_tenth(database: Database, column: str) -> dict[int, int]:
    rows = database.sql(
        f"SELECT floor(extract(epoch FROM {column}) * {TENTH})::bigint, count(*) FROM messages"
        f" WHERE {column} IS NOT NULL GROUP BY 1"
    )
    return {int(b): int(n) for b, n in (line.split("|") for line in rows.splitlines() if line)}


def tenth(epoch: float) -> int:
    return int(epoch * TENTH)


def count_between(series: dict[int, int], start: float, end: float) -> int:
    return sum(series.get(b, 0) for b in range(tenth(start), tenth(end)))


def longest_gap(database: Database, start: float, end: float) -> tuple[float, float]:
    """The longest time with no send from `start` to `end`, from the last send before `start` on; and
    when it began, in seconds after `start`."""
    row = database.sql(
        "WITH s AS (SELECT extract(epoch FROM sent_at)::float8 AS at FROM messages"
        f" WHERE sent_at >= coalesce((SELECT max(sent_at) FROM messages WHERE sent_at < to_timestamp({start})),"
        f" to_timestamp({start})) AND sent_at <= to_timestamp({end})),"
        " g AS (SELECT lag(at) OVER (ORDER BY at) AS before, at FROM s)"
        " SELECT at - before, before FROM g WHERE before IS NOT NULL ORDER BY at - before DESC LIMIT 1"
    )
    if not row:
        return end - start, 0.0
    gap, began = (float(v) for v in row.split("|"))
    return gap, began - start


def latency_percentiles(database: Database, start: float, end: float) -> tuple[float | None, float | None]:
    """p50 and p99 of enqueue to 202, in seconds, of the messages enqueued from `start` to `end`."""
    row = database.sql(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM sent_at - created_at)),"
        " percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM sent_at - created_at))"
        f" FROM messages WHERE created_at >= to_timestamp({start}) AND created_at < to_timestamp({end})"
        " AND sent_at IS NOT NULL"
    )
    p50, p99 = row.split("|") if row else ("", "")
    return (float(p50) if p50 else None, float(p99) if p99 else None)


def throughput_figures(database: Database, marks: Marks, offered_rate: float) -> dict[str, float | None]:
    sent = per_tenth(database, "sent_at")
    created = per_tenth(database, "created_at")
    baseline_s = marks.fault_start - marks.baseline_start
    fault_s = marks.fault_end - marks.fault_start
    baseline_rate = count_between(sent, marks.baseline_start, marks.fault_start) / baseline_s
    fault_rate = count_between(sent, marks.fault_start, marks.fault_end) / fault_s if fault_s >= 0.1 else None

    # Back to 90%: the first window after the fault that sends 90% of the offer, while the load still runs.
    window = int(RECOVERY_WINDOW_S * TENTH)
    needed = RECOVERED_SHARE * offered_rate * RECOVERY_WINDOW_S
    back_after = None
    for start in range(tenth(marks.fault_end), tenth(marks.load_end) - window + 1):
        if sum(sent.get(b, 0) for b in range(start, start + window)) >= needed:
            back_after = max(0.0, start / TENTH - marks.fault_end)
            break

    # The backlog at each tenth: enqueued so far less sent so far.
    first = min(min(created, default=0), min(sent, default=0))
    last = max(max(created, default=0), max(sent, default=0))
    backlog, total = {}, 0
    for b in range(first, last + 1):
        total += created.get(b, 0) - sent.get(b, 0)
        backlog[b] = total
    in_baseline = [backlog.get(b, 0) for b in range(tenth(marks.baseline_start), tenth(marks.fault_start))]
    usual = max(in_baseline, default=0)
    after_fault = range(tenth(marks.fault_end), last + 1)
    drained_at = next((b for b in after_fault if backlog[b] <= usual), None)
    gap, gap_began = longest_gap(database, marks.fault_start, marks.load_end)
    # Per second from the baseline on, relative to the fault's start: enqueued, sent, backlog at its end.
    timeline = [
        [second - int(marks.fault_start), sum(created.get(b, 0) for b in range(second * TENTH, (second + 1) * TENTH)),
         sum(sent.get(b, 0) for b in range(second * TENTH, (second + 1) * TENTH)),
         backlog.get((second + 1) * TENTH - 1, 0)]
        for second in range(int(marks.baseline_start), last // TENTH + 1)
    ]
    return {
        "baseline_rate": baseline_rate,
        "fault_rate": fault_rate,
        "fault_share": fault_rate / baseline_rate if fault_rate is not None and baseline_rate else None,
        "longest_gap_s": gap,
        "longest_gap_began_s": gap_began,
        "back_to_90_s": back_after,
        "usual_backlog": usual,
        "backlog_at_fault_end": backlog.get(tenth(marks.fault_end), 0),
        "peak_backlog": max((backlog[b] for b in range(tenth(marks.fault_start), last + 1)), default=0),
        "drain_s": None if drained_at is None else max(0.0, drained_at / TENTH - marks.fault_end),
        # Drained only once the producer had stopped: under load it never got there.
        "drained_after_load": drained_at is not None and drained_at / TENTH > marks.load_end,
        "timeline": timeline,
    }


def latency_figures(database: Database, marks: Marks) -> dict[str, float | None]:
    figures = {}
    for phase, start, end in (
        ("baseline", marks.baseline_start, marks.fault_start),
        ("fault", marks.fault_start, marks.fault_end),
        ("after", marks.fault_end, marks.load_end),
    ):
        figures[f"p50_{phase}_s"], figures[f"p99_{phase}_s"] = latency_percentiles(database, start, end)
    return figures


def losses(database: Database, enqueued: list[str]) -> dict[str, object]:
    """Every id the API handed out must end `sent`; no row may be left `pending` or `sending`."""
    by_status = dict(
        line.split("|") for line in database.sql("SELECT status, count(*) FROM messages GROUP BY 1").splitlines()
    )
    sent = set(database.sql("SELECT id FROM messages WHERE status = 'sent'").split())
    missing = [i for i in enqueued if i not in sent]
    rows = sum(int(n) for n in by_status.values())
    return {
        "enqueued": len(enqueued),
        "rows": rows,
        "lost": len(missing),
        "sent": len(sent),
        "not_sent": {status: int(n) for status, n in by_status.items() if status != "sent"},
        # Stored although the POST failed on the client's side (a timeout or reset after the commit).
        "stored_unacknowledged": rows - len(set(enqueued)),
    }


# pg_stat_statements shows the claim normalised: constants become $n, so match on its shape.
CLAIM_STATS = (
    "SELECT s.calls, s.total_exec_time FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
    " WHERE d.datname = current_database() AND s.query LIKE '%FOR UPDATE SKIP LOCKED%'"
    " AND s.query LIKE '%lease_token = gen_random_uuid()%' AND s.query NOT ILIKE 'explain%'"
    " ORDER BY s.calls DESC LIMIT 1"
)


def claim_stats(run) -> tuple[int, float] | None:
    """Calls and total milliseconds of the claim so far, or None where pg_stat_statements is missing."""
    try:
        row = run(CLAIM_STATS)
    except Exception:  # noqa: BLE001 - the figure is optional; the run goes on without it
        return None
    if not row:
        return (0, 0.0)
    calls, total = row.split("|")
    return int(calls), float(total)


def mean_ms(before: tuple[int, float] | None, after: tuple[int, float] | None) -> float | None:
    if before is None or after is None or after[0] <= before[0]:
        return None
    return (after[1] - before[1]) / (after[0] - before[0])


STATEMENT_TOTALS = (
    "SELECT s.queryid, s.calls, s.total_exec_time, regexp_replace(left(s.query, 200), '\\s+', ' ', 'g')"
    " FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()"
)


def statement_totals(run) -> dict[str, tuple[int, float, str]] | None:
    """Calls and total milliseconds of every statement so far, by queryid; None without pg_stat_statements."""
    try:
        rows = run(STATEMENT_TOTALS)
    except Exception:  # noqa: BLE001 - the figure is optional; the run goes on without it
        return None
    totals = {}
    for line in rows.splitlines():
        queryid, calls, total, text = line.split("|", 3)
        totals[queryid] = (int(calls), float(total), text)
    return totals


def busiest(before: dict | None, after: dict | None, top: int = 3) -> list[dict[str, object]]:
    """The statements that took the most database time between two `statement_totals`: where a fault's
    time goes, beyond the claim."""
    if before is None or after is None:
        return []
    spent = []
    for queryid, (calls, total, text) in after.items():
        calls_before, total_before, _ = before.get(queryid, (0, 0.0, ""))
        if calls > calls_before:
            spent.append({"statement": text, "calls": calls - calls_before, "total_ms": total - total_before,
                          "mean_ms": (total - total_before) / (calls - calls_before)})
    return sorted(spent, key=lambda s: -s["total_ms"])[:top]


def explain_claim(run, limit: int, sweep: bool) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the claim in a transaction that is rolled back: it locks and updates
    up to `limit` rows for a few milliseconds, which the service's claims skip meanwhile. The service's
    claims resume after the last row it claimed, just before the oldest pending row, and every few
    seconds sweep from the oldest end of the index (`sweep`): both are measured, as the service runs them."""
    frontier = {5: "NULL", 6: "NULL"}
    if not sweep:
        head = run(
            "SELECT next_attempt_at, seq FROM messages WHERE status = 'pending' AND priority = 1"
            " ORDER BY next_attempt_at, seq LIMIT 1"
        ).strip()
        if head:
            due_at, seq = head.split("|")
            # Its messages are all `normal` (priority 1): the frontier of the second of the three lanes.
            frontier = {5: f"ARRAY[NULL, '{due_at}', NULL]::timestamptz[]", 6: f"ARRAY[NULL, {int(seq) - 1}, NULL]::int8[]"}
    bound = stack.bind(claim_statement(), {1: str(limit), 2: "'faults-explain'", 3: "30", 4: "NULL", **frontier,
                                           7: "600"})
    return run(f"BEGIN; EXPLAIN (ANALYZE, BUFFERS, TIMING) {bound}; ROLLBACK")


def plan_summary(plan: str) -> dict[str, object]:
    """What the claim touched: its time, the rows it claimed, and the buffers of the whole statement and of
    its scan of the pending rows."""
    lines = plan.splitlines()
    summary: dict[str, object] = {}
    found = re.search(r"Execution Time: ([0-9.]+) ms", plan)
    summary["execution_ms"] = float(found.group(1)) if found else None
    top_buffers = next((line.strip() for line in lines if line.strip().startswith("Buffers:")), "")
    summary["buffers"] = top_buffers.removeprefix("Buffers: ")
    for i, line in enumerate(lines):
        if "messages_pending_due_idx" in line:
            actual = re.search(r"actual time=[0-9.]+\.\.([0-9.]+) rows=(\d+)", line)
            summary["scan"] = line.strip().split("  (")[0].lstrip("-> ").strip()
            summary["scan_ms"] = float(actual.group(1)) if actual else None
            summary["scan_rows"] = int(actual.group(2)) if actual else None
            following = [other.strip() for other in lines[i + 1:i + 4] if other.strip().startswith("Buffers:")]
            summary["scan_buffers"] = following[0].removeprefix("Buffers: ") if following else ""
            break
    # A bitmap scan visits each heap page its index entries point at, live rows or not.
    heap = re.search(r"Heap Blocks: exact=(\d+)", plan)
    summary["heap_blocks"] = int(heap.group(1)) if heap else None
    claimed = re.search(r"Update on messages m .*?actual time=[0-9.]+\.\.[0-9.]+ rows=(\d+)", plan)
    summary["claimed"] = int(claimed.group(1)) if claimed else None
    return summary


def describe_plan(summary: dict[str, object]) -> str:
    parts = [f"{summary.get('execution_ms')} ms"]
    if summary.get("claimed") is not None:
        parts.append(f"{summary['claimed']} rows claimed")
    parts.append(f"buffers {summary.get('buffers') or '-'}")
    if summary.get("scan"):
        parts.append(f"pending index scan {summary.get('scan_ms')} ms, {summary.get('scan_rows')} entries, "
                     f"buffers {summary.get('scan_buffers') or '-'}")
    if summary.get("heap_blocks") is not None:
        parts.append(f"{summary['heap_blocks']} heap pages visited")
    return "; ".join(parts)
