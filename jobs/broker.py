"""``twin broker start|stop|status``: the embedded Kafka-compatible broker (Tansu, in memory).

It listens on 127.0.0.1 only and prints the bootstrap address to pass as
``--bootstrap-servers``. Memory storage: stopping it forgets every topic.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from pipelines.kafka import broker


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="broker_command", required=True)
    p_start = sub.add_parser("start", help="start the broker in the background")
    p_start.add_argument("--port", type=int, default=broker.DEFAULT_PORT,
                         help=f"loopback port (default {broker.DEFAULT_PORT}; 0 = any free)")
    sub.add_parser("stop", help="stop the background broker")
    sub.add_parser("status", help="is it running, and where")


def main(args: argparse.Namespace) -> int:
    console = Console(highlight=False)
    if args.broker_command == "start":
        try:
            rec = broker.start_background(args.port)
        except broker.BrokerUnavailable as exc:
            console.print(f"[red]twin broker: {exc}[/red]")
            return 1
        verb = "already running" if rec.get("already_running") else "started"
        console.print(f"broker {verb} (pid {rec['pid']}, log {rec['log']})")
        print(rec["bootstrap_servers"])
        return 0
    if args.broker_command == "stop":
        rec = broker.stop_background()
        console.print("broker stopped" if rec else "no broker running")
        return 0
    rec = broker.status()
    if rec is None:
        console.print("no broker running (start one: twin broker start)")
        return 3
    state = "reachable" if rec["reachable"] else "NOT reachable"
    console.print(f"broker running (pid {rec['pid']}, {state}, since {rec['started']})")
    print(rec["bootstrap_servers"])
    return 0 if rec["reachable"] else 1
