"""``twin dashboard [RUN_FOLDER]``: the fleet, live, in a browser, and a twin-state API.

Where the data comes from:

- ``--bootstrap-servers B`` (or ``$TWIN_BOOTSTRAP_SERVERS``, or a ``--kafka-config``
  file): the twin's output topics, live (``twin.state`` from its start, the others from
  ``--lookback`` ago);
- otherwise a run folder (default ``out/run``, what ``make run`` writes): the files of
  ``twin run`` or ``twin flink run``, reread when they change.

It serves on 127.0.0.1 (``--port``, default 8060; 0 picks a free one) and prints the URL.
Binding another address (``--host``) needs a token, from ``--token-file FILE`` (readable
by its owner only) or ``$TWIN_DASHBOARD_TOKEN``; never from the command line, where any
user could read it in the process list. TLS with ``--tls-cert`` and ``--tls-key``.
Read-only: nothing it serves writes anything anywhere.

Exit codes: 0 stopped, 2 bad settings, no run folder, unreachable broker or a port in use,
130 interrupted (Ctrl-C, the usual way to stop it).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from jobs import hints
from pipelines.kafka.config import DEFAULT_BOOTSTRAP_ENV, add_kafka_args

TOKEN_ENV = "TWIN_DASHBOARD_TOKEN"
DEFAULT_PORT = 8060
DEFAULT_FOLDER = Path("out") / "run"
MIN_TOKEN_CHARS = 16


class DashboardError(ValueError):
    """Settings the dashboard cannot start with; the message says what to do."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jobs.options import positive_int

    parser.add_argument("run_folder", nargs="?", metavar="RUN_FOLDER",
                        help="a run's output folder (twin run --out, twin flink run --out); "
                             "default out/run unless Kafka is given")
    add_kafka_args(parser)
    parser.add_argument("--hmac-key-file", metavar="FILE",
                        help="check actions' signatures with this key (also: the "
                             "twin.hmac.key setting, $TWIN_HMAC_KEY, or this user's key)")
    parser.add_argument("--lookback", default="6h", metavar="DURATION",
                        help="read predictions, actions and dead letters from this long ago "
                             "(Kafka timestamps), or 'all' from the topics' start; twin.state "
                             "is always read whole (default 6h)")
    parser.add_argument("--history", type=positive_int, default=360, metavar="WINDOWS",
                        help="windows of history kept per asset for the charts (default 360)")
    parser.add_argument("--asset-info", metavar="FILE", type=Path,
                        help="CSV or JSON of asset attributes by asset_id (site, name, ...); "
                             "the fleet can be filtered by site")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; any other needs a token)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT}; 0 = any free port)")
    parser.add_argument("--token-file", metavar="FILE", type=Path,
                        help=f"the access token, in a file only its owner can read (also: "
                             f"${TOKEN_ENV}); required to bind beyond loopback")
    parser.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate")
    parser.add_argument("--tls-key", metavar="FILE", help="... and this private key")


def read_token(token_file: Path | None) -> str | None:
    """The access token from ``token_file`` or ``$TWIN_DASHBOARD_TOKEN`` (None: none)."""
    from pipelines.private_files import is_private

    if token_file is not None:
        if not token_file.is_file():
            raise DashboardError(f"token file {token_file} does not exist")
        if not is_private(token_file):
            raise DashboardError(f"token file {token_file} can be read by other users: "
                                 f"chmod 600 {token_file}")
        token = token_file.read_text().strip()
        where = f"token file {token_file}"
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        where = f"${TOKEN_ENV}"
        if not token:
            return None
    if len(token) < MIN_TOKEN_CHARS:
        raise DashboardError(f"the token in {where} is too short: use at least "
                             f"{MIN_TOKEN_CHARS} characters (e.g. python -c 'import secrets; "
                             f"print(secrets.token_urlsafe(32))')")
    return token


def read_asset_info(path: Path | None) -> dict[str, dict[str, Any]]:
    """Asset attributes by id from a CSV (a header with ``asset_id``) or JSON file (a list
    of objects with ``asset_id``, or an object keyed by asset id)."""
    if path is None:
        return {}
    if not path.is_file():
        raise DashboardError(f"asset info file {path} does not exist")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                items = [{"asset_id": k, **v} for k, v in data.items() if isinstance(v, dict)]
                if len(items) != len(data):
                    raise DashboardError(f"{path}: every value of the object must be an "
                                         f"object of attributes")
            elif isinstance(data, list) and all(isinstance(x, dict) for x in data):
                items = data
            else:
                raise DashboardError(f"{path}: want a list of objects with asset_id, or an "
                                     f"object keyed by asset id")
        else:
            with path.open(newline="") as f:
                items = list(csv.DictReader(f))
    except (OSError, ValueError, csv.Error) as exc:
        if isinstance(exc, DashboardError):
            raise
        raise DashboardError(f"asset info file {path} is not readable: {exc}") from exc
    out: dict[str, dict[str, Any]] = {}
    for n, item in enumerate(items, 1):
        asset_id = str(item.get("asset_id") or "").strip()
        if not asset_id:
            raise DashboardError(f"{path}: entry {n} has no asset_id")
        out[asset_id] = {k: v for k, v in item.items() if k != "asset_id" and v not in
                         (None, "")}
    return out


def lookback_ms(text: str) -> int | None:
    """``--lookback`` in ms; None for ``all``."""
    import re

    from jobs.options import parse_duration

    text = text.strip().lower()
    if text == "all":
        return None
    simple = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text)
    if simple:  # the usual spellings, without loading pandas into a long-running server
        value = float(simple.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600,
                                          "d": 86400}[simple.group(2)]
        if value <= 0:
            raise DashboardError(f"--lookback must be positive: {text!r} (or 'all')")
        return int(value * 1000)
    try:
        return int(parse_duration(text) * 1000)
    except argparse.ArgumentTypeError as exc:
        raise DashboardError(f"--lookback: {exc} (or 'all')") from exc


def uses_kafka(args: argparse.Namespace) -> bool:
    return bool(args.bootstrap_servers or args.kafka_config or args.kafka_overrides
                or (os.environ.get(DEFAULT_BOOTSTRAP_ENV) and args.run_folder is None))


def build_feed(args: argparse.Namespace):
    """The feed the flags ask for (a Kafka consumer or a run folder), started."""
    from transforms.fleetview import FleetView

    info = read_asset_info(args.asset_info)
    if uses_kafka(args):
        if args.run_folder is not None:
            raise DashboardError("give a run folder or Kafka (--bootstrap-servers), not both")
        from pipelines.dashboard.feeds import KafkaFeed
        from pipelines.kafka.config import config_from_args, twin_settings
        from pipelines.kafka.secrets import hmac_key
        from pipelines.kafka.serde import serde_from_args

        config = config_from_args(args)
        settings = twin_settings(args.kafka_config, args.kafka_overrides)
        secret = hmac_key(args.hmac_key_file, settings, create=False)
        view = FleetView(args.history, info)
        return KafkaFeed(view, config, serde_from_args(args, settings), secret,
                         lookback_ms(args.lookback)).start()
    from pipelines.dashboard.feeds import FolderError, FolderFeed

    folder = Path(args.run_folder) if args.run_folder is not None else DEFAULT_FOLDER
    if args.run_folder is None and not folder.is_dir():
        raise DashboardError(f"no run folder {hints.path(folder)}: run `twin run` first (it "
                             f"writes out/run), name a run folder, or read Kafka with "
                             f"--bootstrap-servers HOST:PORT")
    try:
        return FolderFeed(folder, args.history, info).start()
    except FolderError as exc:
        raise DashboardError(str(exc)) from exc


def main(args: argparse.Namespace) -> int:
    from pipelines.dashboard.server import Server, ServeSettings, status_line
    from pipelines.kafka.broker import BrokerUnavailable
    from pipelines.kafka.config import KafkaConfigError
    from pipelines.kafka.serde import RegistryError

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    out = Console(highlight=False, soft_wrap=True)

    def fail(text: str) -> int:
        err.print(f"[red]twin dashboard: {escape(hints.rewrite(text))}[/red]")
        return 2

    try:
        token = read_token(args.token_file)
        settings = ServeSettings(args.host, args.port, token, args.tls_cert, args.tls_key)
        if args.port < 0 or args.port > 65535:
            raise DashboardError(f"--port must be 0..65535, not {args.port}")
        lookback_ms(args.lookback)
        feed = build_feed(args)
    except (DashboardError, ValueError, OSError, BrokerUnavailable, KafkaConfigError,
            RegistryError) as exc:
        return fail(str(exc))
    server = Server(feed, settings)
    try:
        server.start()
    except (RuntimeError, OSError) as exc:
        feed.stop()
        return fail(f"cannot serve on {args.host}:{args.port} ({exc}); is the port in use? "
                    f"(--port 0 picks a free one)")
    out.print(f"dashboard: [bold]{server.url}[/bold]  ({status_line(feed)}; Ctrl-C stops)")
    out.print(f"twin-state API: {server.url}api/assets and {server.url}api/assets/ID"
              + ("  (Authorization: Bearer <token>)" if token else ""))
    try:
        while server._thread is not None and server._thread.is_alive():
            server._thread.join(0.5)
    finally:
        server.stop()
        feed.stop()
    return 0
