"""The documentation: the README stays a front page, and no relative link in it or in docs/ is dead."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
DOCUMENTS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "README.md"]
DOCUMENTS += sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def outside_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces made hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(document: Path) -> set[str]:
    headings = re.findall(r"^#+ (.+)$", outside_code_blocks(document.read_text()), flags=re.M)
    return {github_anchor(heading) for heading in headings}


def relative_links(document: Path) -> list[str]:
    targets = LINK.findall(outside_code_blocks(document.read_text()))
    return [target for target in targets if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file_and_heading_that_exist(document):
    dead = []
    for target in relative_links(document):
        path_part, _, anchor = target.partition("#")
        linked = (document.parent / path_part).resolve() if path_part else document
        if not linked.exists():
            dead.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            dead.append(f"{target}: no heading #{anchor} in {linked.name}")
    assert dead == []


def test_the_readme_links_every_page_of_docs():
    linked = {target.partition("#")[0] for target in relative_links(ROOT / "README.md")}
    pages = {f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md")}
    assert pages <= linked


def test_the_readme_is_a_front_page_not_the_manual():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150
    headings = [line for line in lines if line.startswith("#")]
    for section in ("## Install and chat", "## Run the tests", "## Using it", "### Keys", "## Documentation"):
        assert section in headings


def test_the_benchmarks_page_is_one_table_each_row_with_a_command_that_exists():
    rows = [line for line in (ROOT / "docs" / "benchmarks.md").read_text().splitlines() if line.startswith("|")]
    header, rule, *figures = rows
    assert header.startswith("| What | Goal | Latest |") and set(rule) <= set("|-") and figures
    for row in figures:
        script = re.search(r"`python (benchmarks/bench_\w+\.py)[^`]*` \|$", row)
        assert script and (ROOT / script[1]).exists(), row


def test_the_anchor_rule_is_githubs():
    assert github_anchor("What hailo-repl promises") == "what-hailo-repl-promises"
    assert github_anchor("Copying over SSH") == "copying-over-ssh"
    assert github_anchor("`/copy` and the clipboard") == "copy-and-the-clipboard"
