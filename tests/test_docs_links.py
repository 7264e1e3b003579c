"""The README and the manual in docs/ link to each other by relative paths and heading anchors.

A moved or renamed page, or a renamed heading, breaks such a link silently on GitHub; these
tests find every relative link (outside code) and check that its file exists and, for
`page.md#anchor`, that the page has a heading with that anchor (GitHub's rule: lower case,
punctuation dropped, spaces to hyphens, `-1`, `-2` ... for repeated headings).
"""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")
EXTERNAL = ("http://", "https://", "mailto:")


def markdown_files(root: str = ROOT) -> list[str]:
    files = [os.path.join(root, "README.md")]
    for folder, _, names in os.walk(os.path.join(root, "docs")):
        files += [os.path.join(folder, n) for n in sorted(names) if n.endswith(".md")]
    return sorted(files)


def prose_lines(path: str):
    """(line number, text) of the lines outside fenced code blocks, inline code removed."""
    inside = False
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if FENCE.match(line):
                inside = not inside
                continue
            if not inside:
                yield number, re.sub(r"`[^`]*`", "", line)


def slug(heading: str) -> str:
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link's text only
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: str) -> set[str]:
    """The heading anchors GitHub gives the page at `path`."""
    seen: dict[str, int] = {}
    result = set()
    inside = False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if FENCE.match(line):
                inside = not inside
                continue
            match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
            if inside or not match:
                continue
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


def broken_links(path: str) -> list[str]:
    """One message per relative link of `path` whose file or anchor does not exist."""
    problems = []
    for number, line in prose_lines(path):
        for target in LINK.findall(line):
            if target.startswith(EXTERNAL):
                continue
            file_part, _, anchor = target.partition("#")
            linked = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
            where = f"{os.path.relpath(path, ROOT)}:{number}: ({target})"
            if not os.path.exists(linked):
                problems.append(f"{where} no file {os.path.relpath(linked, ROOT)}")
            elif anchor and linked.endswith(".md") and anchor not in anchors(linked):
                problems.append(f"{where} {os.path.relpath(linked, ROOT)} has no heading #{anchor}")
    return problems


def linked_files(path: str) -> set[str]:
    result = set()
    for _, line in prose_lines(path):
        for target in LINK.findall(line):
            file_part = target.partition("#")[0]
            if file_part and not target.startswith(EXTERNAL):
                result.add(os.path.normpath(os.path.join(os.path.dirname(path), file_part)))
    return result


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_resolve(path):
    assert broken_links(path) == []


def test_every_manual_page_is_reachable_from_the_index():
    index = os.path.join(ROOT, "docs", "index.md")
    reachable, todo = {index}, [index]
    while todo:
        for linked in linked_files(todo.pop()):
            if linked.endswith(".md") and linked not in reachable and os.path.exists(linked):
                reachable.add(linked)
                todo.append(linked)
    pages = {p for p in markdown_files() if os.sep + "docs" + os.sep in p}
    assert sorted(os.path.relpath(p, ROOT) for p in pages - reachable) == []


def test_readme_links_the_index():
    assert os.path.join(ROOT, "docs", "index.md") in linked_files(os.path.join(ROOT, "README.md"))


def test_readme_keeps_the_test_command_for_ci():
    # .ci/run takes the first line after the marker that is neither a fence nor empty.
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    after = lines[lines.index("<!-- test-command -->") + 1:]
    command = next(line for line in after if line and not line.startswith("```"))
    assert command == "pip install tox && tox"


def test_checker_finds_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## Its `metrics.json` keys\n\n## Again\n\n## Again\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "[ok](docs/page.md) [ok](docs/page.md#its-metricsjson-keys) [ok](docs/page.md#again-1)\n"
        "[gone](docs/gone.md) [no heading](docs/page.md#nothing) [self](#a-title)\n"
        "`[in code](docs/gone.md)` [web](https://example.org/x.md)\n"
        "```\n[in a block](docs/gone.md)\n```\n")
    problems = broken_links(str(readme))
    assert len(problems) == 3
    assert "no file" in problems[0] and "docs/gone.md" in problems[0]
    assert "#nothing" in problems[1] and "#a-title" in problems[2]
    assert anchors(str(tmp_path / "docs" / "page.md")) == {"a-page", "its-metricsjson-keys", "again", "again-1"}
