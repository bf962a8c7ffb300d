"""``twin broker start|stop|status``: the embedded Kafka-compatible broker (Tansu, in memory).

It listens on 127.0.0.1 only and prints the bootstrap address to pass as
``--bootstrap-servers``. Memory storage: stopping it forgets every topic. There is one
background broker per user (its record is in the state folder): ``start`` with another
port while it runs is an error naming it, and ``stop`` only ever signals that process
(never a later program that reuses its pid).

Exit codes: 0 done (or nothing to do), 2 what was asked cannot be done (another port
than the running broker's, a port in use, no Tansu binary), 3 ``status`` of no broker,
1 ``status`` of a broker that does not answer.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from jobs import hints
from pipelines.kafka import broker


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="broker_command", required=True)
    p_start = sub.add_parser("start", help="start the broker in the background")
    p_start.add_argument("--port", type=int, default=None,
                         help=f"loopback port (default {broker.DEFAULT_PORT}, or the running "
                              "broker's; 0 = any free one); another port than the running "
                              "broker's is an error")
    p_stop = sub.add_parser("stop", help="stop the background broker")
    p_stop.add_argument("--port", type=int, default=None,
                        help="only if it listens on this port")
    sub.add_parser("status", help="is it running, and where")


def main(args: argparse.Namespace) -> int:
    console = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if args.broker_command == "start":
        try:
            rec = broker.start_background(args.port)
        except (broker.BrokerUnavailable, broker.BrokerConflict) as exc:
            err.print(f"[red]twin broker: {hints.rewrite(str(exc))}[/red]")
            return 2
        verb = "already running" if rec.get("already_running") else "started"
        console.print(f"broker {verb} (pid {rec['pid']}, log {rec['log']})")
        print(rec["bootstrap_servers"])
        return 0
    if args.broker_command == "stop":
        try:
            rec, what = broker.stop_background(args.port)
        except broker.BrokerConflict as exc:
            err.print(f"[red]twin broker: {exc}[/red]")
            return 2
        if what == "stopped":
            console.print(f"broker stopped (pid {rec['pid']}, {rec['bootstrap_servers']})")
        elif what == "foreign":
            console.print(f"no broker running (its recorded pid {rec['pid']} is another "
                          "program now, left alone; record removed)")
        else:
            console.print("no broker running")
        return 0
    rec = broker.status()
    if rec is None:
        console.print(hints.rewrite("no broker running (start one: `twin broker start`)"))
        return 1
    state = "reachable" if rec["reachable"] else "NOT reachable"
    console.print(f"broker running (pid {rec['pid']}, {state}, since {rec['started']})")
    print(rec["bootstrap_servers"])
    return 0 if rec["reachable"] else 1
