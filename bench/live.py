"""Live capture benchmark: the highest packet rate on loopback that viewers still see within a second.

For each rate, a separate process sends UDP datagrams to a loopback port at that rate for a
few seconds while a live capture of that port runs on a real server (daphne, dumpcap, tshark)
and a websocket viewer records when each row arrives. A row's latency is its arrival minus the
moment its datagram was sent (the n-th row is the n-th datagram: one port, one sender). A rate
is sustained when every datagram shows up as a row and the slowest row came within a second.

    .venv/bin/python -m bench.live [--seconds 5] [--rates 200,1000,...]

writes bench/results/live.json and bench/results/live.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_RATES = [200, 1000, 3000, 10000, 20000, 30000, 40000]
USER, PASSWORD = "bench-live", "a long benchmark password"  # noqa: S105
LATENCY_LIMIT_S = 1.0
SETTLE_S = 3.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def send_datagrams(port: int, rate: int, seconds: float, start_at: float, times_path: str) -> None:
    """Send rate datagrams a second to the port from start_at (monotonic); save each send time."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    total = int(rate * seconds)
    sent: list[float] = []
    payload = b"x" * 64
    while time.monotonic() < start_at:
        time.sleep(0.001)
    for index in range(total):
        due = start_at + index / rate
        while (now := time.monotonic()) < due:
            if due - now > 0.002:
                time.sleep(due - now - 0.001)
        sock.sendto(payload, ("127.0.0.1", port))
        sent.append(time.monotonic())
    Path(times_path).write_text(json.dumps(sent))


class Server:
    """A daphne process with a database and capture folder of its own."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
            "CAPTURES_DIR": str(workdir / "captures"),
            "DEBUG": "1",
        }
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    def start(self) -> str:
        """Start the server; return an API token of a staff user."""
        self.manage("migrate", "--noinput")
        code = (
            "from django.contrib.auth.models import User\n"
            f"User.objects.create_user({USER!r}, password={PASSWORD!r}, is_staff=True)\n"
        )
        self.manage("shell", "-c", code)
        token = self.manage("create_api_token", USER).splitlines()[-1]
        log = open(self.workdir / "server.log", "wb")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "explorer_site.asgi:application",
            ],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/accounts/login/", timeout=2)
                return token
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(20)


def signed_in(server: Server) -> httpx.Client:
    client = httpx.Client(base_url=server.url, timeout=60)
    client.get("/accounts/login/")
    client.post(
        "/accounts/login/",
        data={"username": USER, "password": PASSWORD, "csrfmiddlewaretoken": client.cookies["csrftoken"]},
        headers={"Referer": server.url + "/accounts/login/"},
    )
    client.get("/live/")
    return client


def post(client: httpx.Client, path: str, **data: str) -> httpx.Response:
    return client.post(
        path,
        data={**data, "csrfmiddlewaretoken": client.cookies["csrftoken"]},
        headers={"Referer": f"{client.base_url}/live/"},
    )


async def one_rate(
    server: Server, token: str, client: httpx.Client, rate: int, seconds: float
) -> dict[str, Any]:
    """Capture a stream of datagrams at this rate; return what the viewer saw of it."""
    port = free_port()
    started = post(client, "/live/start/", interface="lo", filter=f"udp port {port}")
    match = re.fullmatch(r"/live/(\d+)/", started.headers.get("location", ""))
    if match is None:
        raise RuntimeError(f"the capture did not start: {started.status_code}")
    live_id = int(match[1])
    arrivals: dict[int, float] = {}
    behind = 0
    url = f"ws://127.0.0.1:{server.port}/ws/live/{live_id}/"
    with tempfile.NamedTemporaryFile(suffix=".json") as times_file:
        async with connect(
            url, origin=server.url, additional_headers={"Authorization": f"Token {token}"}
        ) as ws:
            await asyncio.sleep(1.0)  # dumpcap opens the interface
            start_at = time.monotonic() + 0.5
            sender = multiprocessing.Process(
                target=send_datagrams, args=(port, rate, seconds, start_at, times_file.name)
            )
            sender.start()
            deadline = start_at + seconds + SETTLE_S
            expected = int(rate * seconds)
            while time.monotonic() < deadline and len(arrivals) < expected:
                try:
                    raw = await asyncio.wait_for(ws.recv(), max(0.05, deadline - time.monotonic()))
                except TimeoutError:
                    break
                now = time.monotonic()
                message = json.loads(raw)
                if message["type"] in ("live.rows", "live.snapshot"):
                    for row in message["rows"]:
                        arrivals.setdefault(int(row["number"]), now)
                elif message["type"] == "live.status":
                    behind = max(behind, int(message["status"]["behind"]))
            sender.join(30)
            post(client, f"/live/{live_id}/stop/")
            async with asyncio.timeout(120):
                while json.loads(await ws.recv())["type"] != "live.ended":
                    pass
        sent: list[float] = json.loads(Path(times_file.name).read_text() or "[]")
    latencies = sorted(arrivals[n] - sent[n - 1] for n in arrivals if 0 < n <= len(sent))
    achieved = (len(sent) - 1) / (sent[-1] - sent[0]) if len(sent) > 1 else 0.0

    def percentile(share: float) -> float | None:
        return (
            round(latencies[min(len(latencies) - 1, int(share * len(latencies)))], 3) if latencies else None
        )

    shown = len(arrivals)
    return {
        "rate": rate,
        "sent": len(sent),
        "sent_rate": round(achieved),
        "shown": shown,
        "missing": len(sent) - shown,
        "latency_p50_s": percentile(0.5),
        "latency_p99_s": percentile(0.99),
        "latency_max_s": round(latencies[-1], 3) if latencies else None,
        "most_behind": behind,
        "sustained": shown == len(sent) and bool(latencies) and latencies[-1] < LATENCY_LIMIT_S,
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Live capture benchmark",
        "",
        f"{results['seconds']} s of UDP datagrams per rate on loopback, recorded by dumpcap, decoded by "
        "tshark, pushed to one websocket viewer; latency is from sending a datagram to its row "
        f"arriving at the viewer. Machine: {results['cpus']} CPUs.",
        "",
        "**Highest sustained rate (every packet shown, slowest row < 1 s): "
        f"{results['highest_sustained_rate']} packets/s**",
        "",
        "| rate asked | sent/s | sent | shown | p50 latency | p99 latency | max latency | most behind "
        "| sustained |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        lines.append(
            f"| {run['rate']} | {run['sent_rate']} | {run['sent']} | {run['shown']} "
            f"| {run['latency_p50_s']} s | {run['latency_p99_s']} s | {run['latency_max_s']} s "
            f"| {run['most_behind']} | {'yes' if run['sustained'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


async def run(rates: list[int], seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as workdir:
        server = Server(Path(workdir))
        token = server.start()
        try:
            client = signed_in(server)
            runs = []
            for rate in rates:
                result = await one_rate(server, token, client, rate, seconds)
                print(json.dumps(result), flush=True)
                runs.append(result)
        finally:
            server.stop()
    sustained = [run["rate"] for run in runs if run["sustained"]]
    return {
        "seconds": seconds,
        "cpus": os.cpu_count(),
        "runs": runs,
        "highest_sustained_rate": max(sustained) if sustained else 0,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)))
    args = parser.parse_args(argv)
    results = asyncio.run(run([int(rate) for rate in args.rates.split(",")], args.seconds))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "live.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "live.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
