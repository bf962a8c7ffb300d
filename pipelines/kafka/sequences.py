"""The last command sequence a gateway applied per asset, kept across restarts.

A receiver refuses a command whose sequence is not above the last one it applied for the
asset (:mod:`transforms.signing`): that refuses replays of captured commands and
re-emissions of decisions already acted on. The check is only as good as its memory, so
:class:`LastApplied` writes the table to a small JSON file after every change (atomically,
mode 0600, in a 0700 folder: :func:`pipelines.private_files.write_private`) and reads it
back on start. A file that cannot be read is an error, never an empty table: forgetting
would reopen every replay.

>>> table = LastApplied()
>>> table.get("pump-1") is None
True
>>> table.record("pump-1", 60_000)
>>> table.get("pump-1")
60000
"""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.private_files import write_private

FORMAT = "twinstream.command-sequences.v1"


class SequenceFileError(ValueError):
    """The sequence file exists but cannot be used (with what to do about it)."""


class LastApplied:
    """Per-asset last applied sequence numbers, persisted to ``path`` (None: in memory)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._seqs: dict[str, int] = {}
        if self.path is not None and self.path.exists():
            self._seqs = self._load(self.path)

    @staticmethod
    def _load(path: Path) -> dict[str, int]:
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise SequenceFileError(
                f"cannot read the command sequence file {path} ({exc}); it guards against "
                "replayed commands, so it is not ignored: restore it, or remove it knowing "
                "that every command still valid may then be applied again") from exc
        assets = data.get("assets") if isinstance(data, dict) else None
        if (not isinstance(data, dict) or data.get("format") != FORMAT
                or not isinstance(assets, dict)
                or not all(isinstance(k, str) and type(v) is int for k, v in assets.items())):
            raise SequenceFileError(f"{path} is not a command sequence file ({FORMAT})")
        return dict(assets)

    def get(self, asset_id: str) -> int | None:
        return self._seqs.get(asset_id)

    def record(self, asset_id: str, seq: int) -> None:
        """Remember ``seq`` as applied for ``asset_id`` (durable before this returns)."""
        self._seqs[asset_id] = int(seq)
        if self.path is not None:
            body = {"format": FORMAT, "assets": dict(sorted(self._seqs.items()))}
            try:
                write_private(self.path, json.dumps(body, indent=1).encode() + b"\n")
            except OSError as exc:
                raise SequenceFileError(
                    f"cannot write the command sequence file {self.path} ({exc}): stopping, "
                    "since a restart could not refuse the commands applied since") from exc

    def __len__(self) -> int:
        return len(self._seqs)
