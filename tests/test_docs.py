"""The documentation holds together: README.md and every page under docs/ link only to files
that exist and to headings that exist, with anchors made by GitHub's rules, and the README
stays short enough to read in a sitting. Standard library only: no network, no Markdown package."""

from __future__ import annotations

import html
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 300


def documentation_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


FILES = pytest.mark.parametrize("doc", documentation_files(), ids=_name)

# --- reading Markdown ------------------------------------------------------------------------

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
# `](target)` closes every inline link and image, nested ones included ([![alt](img)](href)).
_INLINE_TARGET = re.compile(r"\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)")
_REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.M)
_HTML_LINK = re.compile(r"<(?:a|img|source)\b[^>]*?\b(href|src|srcset)\s*=\s*[\"']([^\"']+)[\"']", re.I)
_HTML_ID = re.compile(r"<[a-z][a-z0-9]*\b[^>]*?\b(?:id|name)\s*=\s*[\"']([^\"']+)[\"']", re.I)
_EXTERNAL = re.compile(r"^(?:https?|mailto):", re.I)
_LINE_ANCHOR = re.compile(r"^L\d+(?:C\d+)?(?:-L\d+(?:C\d+)?)?$")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a fence's lines become empty, keeping numbering)."""
    lines, fence = [], None
    for line in text.split("\n"):
        match = _FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            lines.append("")
        elif fence is not None:
            if (
                match
                and match.group(1)[0] == fence[0]
                and len(match.group(1)) >= len(fence)
                and not line.strip().strip(fence[0])
            ):
                fence = None
            lines.append("")
        else:
            lines.append(line)
    return lines


def link_targets(text: str) -> list[str]:
    """Every link and image target of a Markdown text, outside code blocks, code spans and
    HTML comments."""
    prose = "\n".join(prose_lines(text))
    prose = _HTML_COMMENT.sub("", prose)
    prose = _CODE_SPAN.sub("", prose)
    targets = [target.strip("<>") for target in _INLINE_TARGET.findall(prose)]
    targets += [target.strip("<>") for target in _REFERENCE_DEFINITION.findall(prose)]
    for attribute, target in _HTML_LINK.findall(prose):
        if attribute.lower() == "srcset":  # "a.png 1x, b.png 2x"
            targets += [part.split()[0] for part in target.split(",") if part.strip()]
        else:
            targets.append(target)
    return targets


def rendered_heading_text(source: str) -> str:
    """The text GitHub shows for a heading's Markdown source: code spans literal, links and
    images as their text, tags dropped, entities decoded."""
    pieces: list[str] = []
    position = 0
    for match in _CODE_SPAN.finditer(source):
        pieces.append(_inline_text(source[position : match.start()]))
        pieces.append(match.group(2).strip() or match.group(2))
        position = match.end()
    pieces.append(_inline_text(source[position:]))
    return "".join(pieces)


def _inline_text(source: str) -> str:
    source = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", source)
    source = re.sub(r"<[^>]+>", "", source)
    return html.unescape(source)


def github_slug(heading_text: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped except '-' and '_', each
    space a '-'."""
    return re.sub(r"[^\w\- ]", "", heading_text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a page defines: its headings' slugs (a repeated slug gets -1, -2, ...) and
    the id or name of its HTML elements."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    lines = prose_lines(text)
    headings = []
    for index, line in enumerate(lines):
        match = _ATX_HEADING.match(line)
        if match:
            headings.append(match.group(2) or "")
        elif (
            _SETEXT_UNDERLINE.match(line)
            and index > 0
            and lines[index - 1].strip()
            and not _ATX_HEADING.match(lines[index - 1])
            and (line.strip()[0] == "=" or not re.match(r"^ {0,3}[-*+] ", lines[index - 1]))
        ):
            headings.append(lines[index - 1].strip())
    for heading in headings:
        slug = base = github_slug(rendered_heading_text(heading))
        if base in counts:
            number = counts[base]
            while True:
                number += 1
                slug = f"{base}-{number}"
                if slug not in counts:
                    break
            counts[base] = number
        counts[slug] = 0
        found.add(slug)
    found.update(_HTML_ID.findall(_HTML_COMMENT.sub("", "\n".join(lines))))
    return found


# --- checking links ------------------------------------------------------------------------


def resolve(doc: Path, target: str, root: Path) -> tuple[Path, str]:
    """The file a relative target names (itself for '#anchor') and its anchor, if any."""
    path, _, fragment = target.partition("#")
    path = unquote(path.split("?", 1)[0])
    if not path:
        return doc, unquote(fragment)
    base = root if path.startswith("/") else doc.parent
    return (base / path.lstrip("/")).resolve(), unquote(fragment)


def broken_links(doc: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for target in link_targets(doc.read_text(encoding="utf-8")):
        if _EXTERNAL.match(target):
            continue
        file, _ = resolve(doc, target, root)
        if not file.exists():
            problems.append(f"{target}: no such file")
        elif root.resolve() not in (file, *file.parents):
            problems.append(f"{target}: outside the repository")
    return problems


def broken_anchors(doc: Path, root: Path = ROOT) -> list[str]:
    problems, cache = [], {}
    for target in link_targets(doc.read_text(encoding="utf-8")):
        if _EXTERNAL.match(target) or "#" not in target:
            continue
        file, fragment = resolve(doc, target, root)
        if not file.is_file():
            continue  # reported by broken_links
        if file.suffix.lower() not in (".md", ".markdown"):
            if not _LINE_ANCHOR.match(fragment):
                problems.append(f"{target}: {file.name} is not Markdown; only line anchors (#L12) exist there")
            continue
        if file not in cache:
            cache[file] = anchors(file.read_text(encoding="utf-8"))
        if fragment not in cache[file]:
            problems.append(f"{target}: no heading or id '{fragment}' in {file.name}")
    return problems


# --- the promises --------------------------------------------------------------------------


@FILES
def test_every_relative_link_in_the_docs_points_at_a_file_that_exists(doc):
    problems = broken_links(doc)
    assert problems == [], f"{_name(doc)}:\n  " + "\n  ".join(problems)


@FILES
def test_every_anchor_in_the_docs_names_a_heading_of_its_file(doc):
    problems = broken_anchors(doc)
    assert problems == [], f"{_name(doc)}:\n  " + "\n  ".join(problems)


def test_the_readme_stays_short_enough_to_read_in_a_sitting():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_the_readme_links_every_page_of_the_docs():
    linked = {
        resolve(README, target, ROOT)[0]
        for target in link_targets(README.read_text(encoding="utf-8"))
        if not _EXTERNAL.match(target)
    }
    unlinked = [_name(page) for page in sorted(DOCS.glob("*.md")) if page.resolve() not in linked]
    assert unlinked == [], "README.md links none of these: " + ", ".join(unlinked)


def test_the_readme_gives_the_test_command_that_ci_runs():
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^scripts/test\.sh\b", README.read_text(encoding="utf-8"), re.M)


def test_anchors_follow_githubs_slug_rules():
    page = "\n".join(
        [
            "# Open Chat Widget backend (Python)",
            "## Embedded Redis (when `REDIS_URL` is unset)",
            "## GET /v1/admin/conversations/&lt;id&gt;",
            "## GET /v1/chat/history?sessionId=",
            "## POST /chat (legacy)",
            "## Notes",
            "## Notes",
            "## Notes",
            "```sh",
            "# a shell comment, not a heading",
            "```",
            "Setext heading",
            "==============",
            '<a id="restarts"></a>',
        ]
    )
    assert anchors(page) == {
        "open-chat-widget-backend-python",
        "embedded-redis-when-redis_url-is-unset",
        "get-v1adminconversationsid",
        "get-v1chathistorysessionid",
        "post-chat-legacy",
        "notes",
        "notes-1",
        "notes-2",
        "setext-heading",
        "restarts",
    }


def test_the_checker_reports_a_missing_file_and_a_wrong_anchor(tmp_path):
    """The link checker itself can fail: a page with one good and several broken links."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "GUIDE.md").write_text("# Guide\n\n## Set up\n\nBack to [the start](../README.md#start).\n")
    (tmp_path / "README.md").write_text(
        "\n".join(
            [
                "# Start",
                "[good](docs/GUIDE.md#set-up) [missing](docs/NOPE.md) [bad anchor](docs/GUIDE.md#setup)",
                "[here](#start) [not here](#finish) ![shot](docs/screenshots/widget.png)",
                '<a href="docs/GONE.md">gone</a> [web](https://example.com/x#y) [mail](mailto:a@example.com)',
                "```md",
                "[in a code block](docs/IGNORED.md)",
                "```",
                "`[in a code span](docs/IGNORED.md)`",
            ]
        )
    )
    readme = tmp_path / "README.md"
    assert broken_links(readme, tmp_path) == [
        "docs/NOPE.md: no such file",
        "docs/screenshots/widget.png: no such file",
        "docs/GONE.md: no such file",
    ]
    assert broken_anchors(readme, tmp_path) == [
        "docs/GUIDE.md#setup: no heading or id 'setup' in GUIDE.md",
        "#finish: no heading or id 'finish' in README.md",
    ]
    assert broken_links(tmp_path / "docs" / "GUIDE.md", tmp_path) == []
    assert broken_anchors(tmp_path / "docs" / "GUIDE.md", tmp_path) == []
