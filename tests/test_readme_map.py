"""The README's "Where things are" table names only paths (and classes) that exist, and every command."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def where_rows() -> list[tuple[str, str]]:
    """(concern, where) of each row of the README's "## Where things are" table."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Where things are\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    cells = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in rows[1:]]  # the header left out
    assert cells and all(len(c) == 2 for c in cells), rows
    return [(c[0], c[1]) for c in cells]


def test_the_map_names_only_paths_that_exist():
    named = []
    for concern, where in where_rows():
        for token in re.findall(r"`([^`]+)`", concern + " " + where):
            if token.split("/", 1)[0] in {"medft", "configs", "scripts", "tests"} and "<" not in token:
                named.append(token)
                path = REPO / token
                assert (path.is_dir() if token.endswith("/") else path.is_file()), f"README map: {token} does not exist"
        for module, cls in re.findall(r"`([\w/]+\.py)` \(`(\w+)`\)", where):  # e.g. medft/models/base.py (`MedVLM`)
            assert re.search(rf"^class {cls}\b", (REPO / module).read_text(), re.M), f"README map: no class {cls} in {module}"
    assert len(named) >= 15 and "medft/tuning.py" in named and "medft/commands/" in named


def test_the_map_names_every_command():
    from medft.cli import COMMANDS

    (commands,) = [concern for concern, _ in where_rows() if concern.startswith("the commands")]
    for name in COMMANDS:
        assert f"`{name}`" in commands or f"`medft {name}`" in commands, f"README map: medft {name} not listed"


def docs() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_links_between_the_readme_and_docs_lead_somewhere():
    for page in docs():
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.relative_to(REPO)}: link {target} leads nowhere"


def test_paths_named_in_the_readme_and_docs_exist():
    """Every `medft/...`, `tests/...`, `scripts/...` or `docs/...` path in backquotes (one of the few
    git-ignored ones, or a pattern with <, *, ~ or …, aside)."""
    ignored = {"medft/configs/local/default.yaml"}
    for page in docs():
        for token in re.findall(r"`([^`\s]+)`", page.read_text()):
            token = token.rstrip(".,:;")
            if token.split("/", 1)[0] in {"medft", "tests", "scripts", "docs"} and "/" in token \
                    and not any(c in token for c in "<*~…{$") and token not in ignored:
                path = REPO / token.split("::")[0].split(":")[0]
                assert path.exists(), f"{page.relative_to(REPO)} names {token}, which does not exist"
