"""What serving costs on top of answering: the same questions through ``QA.answer()`` in
process, ``POST /v1/ask`` and ``POST /v1/chat/completions`` on a real uvicorn (loopback), and
MCP's ``ask`` tool over stdio (``qa mcp`` spawned by the SDK's client), on a copy of ./seeds.

    .venv/bin/python -m benchmarks.serving [--runs 20]

Prints a Markdown table: median and p95 milliseconds per question for each way in, and the
seconds from spawning ``qa mcp`` to its tool list (a client's start-up wait).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import anyio
import httpx

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "How many interceptors is the Pentagon sending to Ukraine?",
    "Who is sending interceptors for the Patriot system to Ukraine?",
    "What is the population of Lisbon?",
]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _timed(call, runs: int) -> list[float]:
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        call(QUESTIONS[i % len(QUESTIONS)])
        times.append(1000 * (time.perf_counter() - t0))
    return times


def _row(name: str, times: list[float]) -> str:
    p95 = sorted(times)[max(0, int(round(0.95 * len(times))) - 1)]
    return f"| {name} | {statistics.median(times):.1f} | {p95:.1f} | {len(times)} |"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)

    import uvicorn
    from mcp import Client, StdioServerParameters

    from qa.serving import open_engine
    from qa.serving.api import create_app

    base = Path(tempfile.mkdtemp(prefix="qa-serving-bench-"))
    try:
        shutil.copytree(ROOT / "seeds", base / "docs")
        engine = open_engine(base / "docs", base / "index")
        engine.refresh()
        for q in QUESTIONS:  # warm every path once
            engine.answer(q)
        rows = [_row("QA.answer() in process", _timed(engine.answer, args.runs))]

        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(engine), port=port,
                                               log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/v1"
        with httpx.Client(timeout=60) as http:
            http.post(f"{url}/ask", json={"question": QUESTIONS[0]})
            rows.append(_row("POST /v1/ask", _timed(
                lambda q: http.post(f"{url}/ask", json={"question": q}).raise_for_status(),
                args.runs)))
            rows.append(_row("POST /v1/chat/completions", _timed(
                lambda q: http.post(f"{url}/chat/completions", json={
                    "model": "qa", "messages": [{"role": "user", "content": q}]}
                ).raise_for_status(), args.runs)))
        server.should_exit = True
        thread.join(10)

        params = StdioServerParameters(
            command=sys.executable, cwd=str(ROOT),
            args=["-m", "qa.cli", "mcp", "--seeds", str(base / "docs"), "--index",
                  str(base / "index")])

        async def over_stdio():
            t0 = time.perf_counter()
            async with Client(params, read_timeout_seconds=120) as client:
                await client.list_tools()
                started = time.perf_counter() - t0
                await client.call_tool("ask", {"question": QUESTIONS[0]})  # loads the models
                times = []
                for i in range(args.runs):
                    t1 = time.perf_counter()
                    await client.call_tool("ask", {"question": QUESTIONS[i % len(QUESTIONS)]})
                    times.append(1000 * (time.perf_counter() - t1))
                return started, times

        started, times = anyio.run(over_stdio)
        rows.append(_row("MCP ask over stdio", times))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("| way in | median ms | p95 ms | questions |\n| --- | --- | --- | --- |")
    print("\n".join(rows))
    print(f"\nqa mcp: {started:.1f} s from spawn to its tool list")
    return 0


if __name__ == "__main__":
    sys.exit(main())
