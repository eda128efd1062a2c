"""The README and docs/: every relative link and picture exists, the README stays short, the command
line reference is what the parser says, and the generated sections carry no notes about the day."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cxr_core.config import PROJECT_ROOT

DOCS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target), and <img src="target">; an optional "title" after the target.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|<img[^>]+src=\"([^\"]+)\"")


def relative_targets(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)  # code blocks hold no links
    targets = [a or b for a, b in LINK.findall(text)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_every_relative_link_and_image_exists(path):
    missing = [t for t in relative_targets(path) if not (path.parent / t.split("#")[0]).exists()]
    assert not missing, f"{path.name} links to missing files: {missing}"


def test_the_link_check_sees_links_images_and_broken_ones(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("See [a](a.md), ![pic](images/x.png \"title\"), [web](https://example.org), [here](#top),\n"
                    "<img src=\"images/y.png\" width=\"300\">\n```\n[not a link](nowhere.md)\n```\n")
    assert relative_targets(page) == ["a.md", "images/x.png", "images/y.png"]


def test_the_readme_is_short_and_shows_the_product():
    text = (PROJECT_ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 170
    pictures = [t for t in relative_targets(PROJECT_ROOT / "README.md") if t.endswith(".png")]
    assert len(pictures) >= 3
    assert "Not for clinical use" in text
    for name in ("teaching", "data", "results", "performance", "cli"):
        assert f"docs/{name}.md" in text


def test_generated_text_reads_like_documentation():
    for path in DOCS:
        text = path.read_text()
        assert "(dirty)" not in text and not re.search(r"\bissue \d+", text, re.IGNORECASE), path.name


def test_cli_reference_is_what_the_parser_generates():
    from cxr_core.cli import reference

    assert reference.CLI_DOC.read_text() == reference.render(), (
        "docs/cli.md differs from the parser: rewrite it with `python -m cxr_core.cli.reference`")


def test_cli_reference_lists_every_command_and_flag():
    from cxr_core.cli import parser, reference

    text = reference.render()
    for name, _, sub in reference.commands(parser()):
        assert f"\n## {name}\n" in text
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag in text or flag in ("-h", "--help"), (name, flag)
