"""The documentation's commands are commands this CLI takes, as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from jobs.cli import build_parser, unknown_beam_options, unrecognized_message

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def shell_commands(text: str) -> list[str]:
    """The ``twin`` command lines of a page's ``sh`` blocks (continuations joined,
    comments dropped, ``a && b`` split)."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith(".venv/bin/twin ") or part.startswith("twin "):
                    commands.append(part)
    return commands


def test_the_pages_have_commands_to_check():
    found = {page.name: len(shell_commands(page.read_text())) for page in PAGES}
    assert found["README.md"] >= 15 and found["kafka.md"] >= 5 and found["flink.md"] >= 5


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_documented_command_parses(page):
    parser = build_parser()
    bad = []
    for command in shell_commands(page.read_text()):
        argv = shlex.split(command)[1:]
        beam: list[str] = []
        if "--" in argv:
            cut = argv.index("--")
            argv, beam = argv[:cut], argv[cut + 1:]
        try:
            args, extras = parser.parse_known_args(argv)
        except SystemExit:
            bad.append(f"{command}: does not parse")
            continue
        if extras:
            bad.append(f"{command}: {unrecognized_message(extras, parser)}")
        if beam and (args.command != "run" or unknown_beam_options(beam)):
            bad.append(f"{command}: Beam options where they are not taken")
    assert not bad, "\n".join(bad)


def test_documented_tail_commands_end_by_themselves():
    """A reader pastes them: `twin tail` without --timeout or --max never returns."""
    for page in PAGES:
        for command in shell_commands(page.read_text()):
            if " tail " in f" {command} ":
                assert "--timeout" in command or "--max" in command, (page.name, command)


def test_the_readme_stays_short_and_undated():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "dates belong in the records"
