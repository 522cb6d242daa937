"""The README and the pages under docs/ stay true: every command they show parses with today's
command line, every config key they name exists, and every link between them leads somewhere.

Read from the Markdown itself: a renamed flag or key fails here the day it is renamed, not
when a photographer pastes a line that no longer works.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import shlex
from pathlib import Path

import pytest
import yaml

from daemon.cli.main import build_parser
from daemon.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
NOT_CUTOUT_CONFIG = "(Prometheus's own configuration"
"""A YAML block that says this on its first line configures another program."""
FILE_NAMES = {"queue.sqlite3", "model.safetensors", "model.torchscript"}
"""Files whose names read like a key of the `queue` or `model` section."""


def _keys(obj: object, prefix: str = "") -> set[str]:
    if not dataclasses.is_dataclass(obj):
        return set()
    found = set()
    for field in dataclasses.fields(obj):
        found |= {prefix + field.name, *_keys(getattr(obj, field.name), f"{prefix}{field.name}.")}
    return found


KEYS = _keys(Settings())
SECTIONS = {key for key in KEYS if "." not in key}


def _prose(text: str) -> str:
    return FENCE.sub("", text)


def _commands(page: Path) -> list[str]:
    """Every `cutout ...` line: in code blocks (a shell prompt's `$ ` dropped) and in inline code."""
    text = page.read_text(encoding="utf-8")
    lines = [line.strip().removeprefix("$ ") for _, body in FENCE.findall(text) for line in body.splitlines()]
    spans = [span.strip() for span in INLINE.findall(_prose(text))]
    return [line for line in lines + spans if re.match(r"(sudo )?cutout( |$)", line)]


def _all(find: object) -> list[tuple[str, str]]:
    assert callable(find)
    return [(page.relative_to(ROOT).as_posix(), item) for page in PAGES for item in find(page)]


@pytest.mark.parametrize(("page", "command"), _all(_commands))
def test_every_command_the_docs_show_parses_with_todays_command_line(page: str, command: str) -> None:
    argv = shlex.split(command, comments=True)
    argv = argv[1:] if argv[0] == "sudo" else argv
    refused = io.StringIO()
    with contextlib.redirect_stderr(refused), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(argv[1:])
        except SystemExit as exc:  # --help exits 0; a wrong flag or command exits 2
            assert exc.code == 0, f"{page}: {command!r}: {refused.getvalue().strip().splitlines()[-1]}"


def _named_keys(page: Path) -> list[str]:
    """`section.key` in inline code, and the keys of YAML examples (a recipe's or route's own
    fields are the recipes' business: tests/test_recipes.py)."""
    text = page.read_text(encoding="utf-8")
    named = [match.group(0) for span in INLINE.findall(_prose(text))
             for match in re.finditer(r"\b([a-z_]+)\.([a-z_0-9]+)\b", span)
             if match.group(1) in SECTIONS and match.group(0) not in FILE_NAMES]
    for lang, body in FENCE.findall(text):
        data = yaml.safe_load(body) if lang == "yaml" and NOT_CUTOUT_CONFIG not in body else None
        for section, value in (data or {}).items():
            named.append(section)
            if isinstance(value, dict) and section not in ("recipes",):
                named += [f"{section}.{key}" for key in value]
    return named


@pytest.mark.parametrize(("page", "key"), _all(_named_keys))
def test_every_config_key_the_docs_name_exists(page: str, key: str) -> None:
    assert key in KEYS, f"{page} names {key}, which is no setting"


def _links(page: Path) -> list[str]:
    return [target for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page.read_text(encoding="utf-8")))
            if not re.match(r"https?:|mailto:", target)]


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.*)$", _prose(page.read_text(encoding="utf-8")), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize(("page", "target"), _all(_links))
def test_every_link_between_the_pages_leads_to_a_file_and_heading_that_exist(page: str, target: str) -> None:
    path, _, anchor = target.partition("#")
    destination = (ROOT / page).parent / path if path else ROOT / page
    assert destination.exists(), f"{page} links to {target}: no such file"
    if anchor and destination.suffix == ".md":
        assert anchor in _anchors(destination), f"{page} links to {target}: no such heading"


def test_the_readme_is_short_and_leads_to_every_page_of_the_docs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 180
    assert sorted(page.name for page in (ROOT / "docs").glob("*.md") if f"docs/{page.name}" not in readme) == []


def test_the_checks_find_commands_keys_and_links_on_every_page() -> None:
    """The extraction itself works: a page it cannot read would pass every check above."""
    assert len(_all(_commands)) > 100 and len(_all(_named_keys)) > 100 and len(_all(_links)) > 40
