"""Every relative link and image in README.md and docs/*.md points at a file of the repository, and every #anchor at a
heading of its target page (GitHub's anchor rule: lower case, punctuation dropped, spaces to hyphens)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|<img\s[^>]*src=\"([^\"]+)\"")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def anchors(page):
    """GitHub's heading anchors of a page, with -1, -2 … for repeats."""
    seen, out = {}, set()
    for line in FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def links(page):
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    for match in LINK.finditer(text):
        target = match.group(1) or match.group(2)
        if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: are not checked here
            yield target


CASES = [(page, target) for page in PAGES for target in links(page)]


def test_the_pages_have_links():
    assert len(PAGES) > 1 and CASES


@pytest.mark.parametrize("page, target", CASES, ids=[f"{p.relative_to(ROOT)}->{t}" for p, t in CASES])
def test_relative_link_resolves(page, target):
    path, _, anchor = target.partition("#")
    file = (page.parent / path).resolve() if path else page
    assert file.exists(), f"{page.relative_to(ROOT)}: {target} does not exist"
    if anchor:
        assert file.suffix == ".md", f"{page.relative_to(ROOT)}: {target}: an anchor into a non-Markdown file"
        assert anchor in anchors(file), f"{page.relative_to(ROOT)}: {target}: no such heading in {file.name}"
