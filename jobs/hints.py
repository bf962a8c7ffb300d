"""How to spell a ``twin`` command so that a user can paste it and have it run.

The CLI prints next steps ("score it: ... evaluate out/run"). From a fresh clone ``twin``
is not on ``PATH`` (``make setup`` installs it into ``.venv/bin``), so a hint names the
program the way the user started it: ``twin`` when that is what ``PATH`` finds, else the
path of the script they ran, relative to the current folder when it lies below it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys


def program(argv0: str | None = None) -> str:
    """The shortest spelling of the running ``twin`` program that works from here."""
    argv0 = argv0 if argv0 is not None else sys.argv[0]
    name = os.path.basename(argv0)
    if name != "twin":  # python -m jobs.cli, pytest, an embedding tool
        found = shutil.which("twin")
        return "twin" if found else f"{shlex.quote(sys.executable)} -m jobs.cli"
    found = shutil.which("twin")
    if found and os.path.realpath(found) == os.path.realpath(argv0):
        return "twin"
    path = os.path.abspath(argv0)
    rel = os.path.relpath(path)
    return shlex.quote(rel if not rel.startswith("..") else path)


def command(*args: str, argv0: str | None = None) -> str:
    """A whole command line, each argument quoted as a shell needs it.

    >>> command("evaluate", "out/run", argv0="/nowhere/bin/twin").endswith(" evaluate out/run")
    True
    """
    return " ".join([program(argv0), *(shlex.quote(str(a)) for a in args)])


def path(p: str | os.PathLike) -> str:
    """``p`` relative to the current folder when it lies below it (shorter to paste)."""
    full = os.path.abspath(p)
    rel = os.path.relpath(full)
    return full if rel.startswith("..") else rel


def rewrite(text: str) -> str:
    """``text`` with every command quoted in backticks (```twin broker start```) spelled as
    the running program can be run from here; library errors name ``twin`` plainly.

    >>> rewrite("start one (`twin broker start`)").endswith(" broker start`)")
    True
    """
    import re

    name = program()
    return re.sub(r"`twin (?=[a-z])", lambda _m: f"`{name} ", text)
