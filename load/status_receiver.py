#!/usr/bin/env python3
"""A fast receiver for the service's status webhooks (`STATUS_WEBHOOK_URL`), for `make bench`.

Answers every POST 204 at once and counts what it got; `GET /stats` reports it as JSON:
`received` (POSTs), `distinct` (distinct `webhook-id`s), `by_type` (distinct events by their `type`),
`pairs` (distinct message and type pairs: one `message.sent` of each message is one pair) and
`pairs_repeated` (pairs that came under more than one `webhook-id`: a message told the same thing twice
as two events, which the totals alone would let pass beside a message told nothing).
It does not verify signatures (tests/it/status_events.rs does): it stands in for a receiver that keeps
up, so that the bench measures the service's outbox and not the receiver. asyncio on keep-alive
connections, the standard library only; run by load/stack.py as its own process:

    python3 load/status_receiver.py --addr 127.0.0.1:8099
"""

from __future__ import annotations

import argparse
import asyncio
import json

NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


class Receiver:
    def __init__(self) -> None:
        self.received = 0
        self.ids: set[bytes] = set()
        self.by_type: dict[str, int] = {}
        self.pairs: dict[tuple[str, str], int] = {}

    def record(self, webhook_id: bytes | None, body: bytes) -> None:
        self.received += 1
        if webhook_id is None or webhook_id in self.ids:
            return  # a repeat (same `webhook-id`) is the same event
        self.ids.add(webhook_id)
        try:
            event = json.loads(body)
            kind = str(event.get("type"))
            message = str(event.get("data", {}).get("id"))
        except (ValueError, AttributeError):
            kind, message = "unreadable", ""
        self.by_type[kind] = self.by_type.get(kind, 0) + 1
        self.pairs[(message, kind)] = self.pairs.get((message, kind), 0) + 1

    def stats(self) -> bytes:
        body = json.dumps({
            "received": self.received,
            "distinct": len(self.ids),
            "by_type": self.by_type,
            "pairs": len(self.pairs),
            "pairs_repeated": sum(1 for count in self.pairs.values() if count > 1),
        }).encode()
        return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.split(b"\r\n")
                headers = {}
                for line in header_lines:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
                if request_line.startswith(b"GET /stats"):
                    writer.write(self.stats())
                else:
                    self.record(headers.get(b"webhook-id"), body)
                    writer.write(NO_CONTENT)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--addr", default="127.0.0.1:0", help="host:port to listen on")
    host, port = parser.parse_args().addr.rsplit(":", 1)
    receiver = Receiver()
    server = await asyncio.start_server(receiver.serve, host, int(port), backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
