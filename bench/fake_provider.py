"""A fake provider that takes a benchmark's load: an asyncio HTTP/1.1 server in a process
of its own, speaking Clickatell's legacy REST or Twilio's wire format, answering every
request after a fixed latency, and counting what it received.

It runs apart from the benchmark (`python -m bench.fake_provider KIND LATENCY`, which
prints its port), so its work competes for neither the benchmark's GIL nor the
dispatchers'. An asyncio server holds any number of requests in their latency at once
without a thread each; `capacity` measures that it keeps up (see `check_capacity`).

`GET /_bench/stats` answers what it saw: requests, numbers, distinct numbers, how many
numbers came more than once, the most requests in flight at once, the connections that
brought them and each request's
arrival (time.time(), comparable with the benchmark's clock on one machine).
`POST /_bench/reset` forgets it all. Given `REFUSE_AFTER`, it answers 503 to every send
once it has taken that many numbers (a provider going down mid-send), counting those.
"""

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import requests

# Not from bench.common: the fake's own process needs none of what that imports.
ROOT = Path(__file__).resolve().parent.parent

TWILIO_SID = "ACbench"
TWILIO_PATH = f"/Accounts/{TWILIO_SID}/Messages.json"
CLICKATELL_PATH = "/rest/message"


class Recorder:
    """What the fake saw, and the provider ids it handed out (unique across the run)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.received: Counter[str] = Counter()
        self.arrivals: list[tuple[float, str]] = []  # (time.time(), the first number)
        self.in_flight = 0
        self.most_in_flight = 0
        self.connections = 0  # that sent requests: many more than were in flight is churn
        self.next_id = 0
        self.refused = 0  # requests answered 503 once past REFUSE_AFTER
        self.admitted = 0  # numbers of the requests taken in, counted as they arrive

    def provider_id(self) -> str:
        self.next_id += 1
        return f"bench-{self.next_id}"

    def stats(self) -> dict:
        return {
            "requests": len(self.arrivals),
            "numbers": sum(self.received.values()),
            "distinct": len(self.received),
            "doubled": sum(1 for count in self.received.values() if count > 1),
            "most_in_flight": self.most_in_flight,
            "connections": self.connections,
            "refused": self.refused,
            "arrivals": self.arrivals,
        }


def clickatell_numbers(body: bytes) -> list[str]:
    return json.loads(body)["to"]


def clickatell_answer(recorder: Recorder, numbers: list[str]) -> tuple[int, dict]:
    recorder.received.update(numbers)
    entries = [
        {"accepted": True, "to": number, "apiMessageId": recorder.provider_id()}
        for number in numbers
    ]
    return 202, {"data": {"message": entries}}


def twilio_numbers(body: bytes) -> list[str]:
    return [dict(parse_qsl(body.decode()))["To"].lstrip("+")]


def twilio_answer(recorder: Recorder, numbers: list[str]) -> tuple[int, dict]:
    recorder.received[numbers[0]] += 1
    message = {"sid": f"SM{recorder.provider_id()}", "to": f"+{numbers[0]}", "status": "queued"}
    return 201, {**message, "error_code": None, "num_segments": "1"}


# kind -> (path, the numbers of a request's body, the answer to them)
KINDS = {
    "clickatell": (CLICKATELL_PATH, clickatell_numbers, clickatell_answer),
    "twilio": (TWILIO_PATH, twilio_numbers, twilio_answer),
}


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict, bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    request_line, *lines = head.split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        if value:
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return method, target, headers, body


def response_bytes(status: int, payload: object) -> bytes:
    body = json.dumps(payload).encode()
    head = (
        f"HTTP/1.1 {status} Bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def serve(kind: str, latency: float, refuse_after: int | None = None) -> None:
    path, numbers_of, answer = KINDS[kind]
    recorder = Recorder()

    async def reply(method: str, target: str, body: bytes) -> tuple[int, object]:
        if target == "/_bench/stats":
            return 200, recorder.stats()
        if target == "/_bench/reset":
            recorder.reset()
            return 200, {}
        if method != "POST" or target != path:
            return 404, {"error": f"no {method} {target} here"}
        numbers = numbers_of(body)
        if refuse_after is not None and recorder.admitted >= refuse_after:
            recorder.refused += 1
            return 503, {"error": "refusing"}
        recorder.admitted += len(numbers)
        recorder.arrivals.append((time.time(), numbers[0]))
        recorder.in_flight += 1
        recorder.most_in_flight = max(recorder.most_in_flight, recorder.in_flight)
        try:
            await asyncio.sleep(latency)
            return answer(recorder, numbers)
        finally:
            recorder.in_flight -= 1

    async def connection(reader, writer) -> None:
        counted = False  # a connection of the provider's client, not of the benchmark's own
        try:
            while True:
                method, target, headers, body = await read_request(reader)
                if not counted and target == path:
                    recorder.connections += 1
                    counted = True
                writer.write(response_bytes(*await reply(method, target, body)))
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed its keep-alive connection
        finally:
            writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


@dataclass
class Fake:
    url: str
    kind: str
    latency: float

    def stats(self) -> dict:
        answer = requests.get(f"{self.url}/_bench/stats", timeout=30)
        answer.raise_for_status()
        return answer.json()

    def reset(self) -> None:
        requests.post(f"{self.url}/_bench/reset", timeout=30).raise_for_status()

    def provider_config(self) -> dict:
        """The smsProvider settings that point the service at this fake."""
        if self.kind == "twilio":
            return {"name": "Twilio", "url": self.url, "options": {"accountSid": TWILIO_SID}}
        return {"name": "Clickatell", "url": self.url}


@contextlib.contextmanager
def fake_provider(kind: str, latency: float, refuse_after: int | None = None) -> Iterator[Fake]:
    """Run the fake in a process of its own; yield it, stop it afterwards."""
    refusing = [str(refuse_after)] if refuse_after is not None else []
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_provider", kind, str(latency), *refusing],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(process.stdout.readline())
        yield Fake(f"http://127.0.0.1:{port}", kind, latency)
    finally:
        process.terminate()
        process.wait(timeout=10)


async def _drive(url: str, path: str, body: bytes, connections: int, seconds: float) -> list:
    """Keep `connections` keep-alive clients asking for `seconds`; return each answer's time."""
    host, port = url.removeprefix("http://").split(":")
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    stop = time.monotonic() + seconds
    times: list[float] = []

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        while time.monotonic() < stop:
            began = time.monotonic()
            writer.write(request)
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            length = int(head.lower().split("content-length:")[1].split("\r\n")[0])
            await reader.readexactly(length)
            times.append(time.monotonic() - began)
        writer.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    return times


def capacity(fake: Fake, connections: int, seconds: float = 3.0) -> float:
    """Requests/s the fake sustains with `connections` requests in flight at once: that
    many over the mean answer time (the ideal is connections / latency). Its counts are
    reset afterwards."""
    if fake.kind == "twilio":
        path, body = TWILIO_PATH, b"To=%2B27830000000&Body=capacity"
    else:
        path, body = CLICKATELL_PATH, json.dumps({"text": "capacity", "to": ["27830000000"]})
        body = body.encode()
    times = asyncio.run(_drive(fake.url, path, body, connections, seconds))
    fake.reset()
    return connections / (sum(times) / len(times))


def check_capacity(fake: Fake, connections: int, needed: float) -> float:
    """Measure the fake at `connections` requests at once (more than the benchmark can
    have in flight); fail the benchmark unless it sustains twice the `needed` requests/s.
    Returns the rate measured."""
    rate = capacity(fake, connections)
    assert rate >= 2 * needed, f"the fake sustains {rate:.0f}/s; the benchmark needs {needed}/s"
    return rate


if __name__ == "__main__":
    refuse_after = int(sys.argv[3]) if len(sys.argv) > 3 else None
    asyncio.run(serve(sys.argv[1], float(sys.argv[2]), refuse_after))
