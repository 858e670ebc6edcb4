"""The project's documents link only to files that exist in the repository.

README.md, CONTRIBUTING.md, SECURITY.md and docs/*.md are read as the project ships
them: every relative Markdown link must name a file or directory inside the checkout,
and none may point outside it (``../shared/...`` is not part of the repository).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["README.md", "CONTRIBUTING.md", "SECURITY.md",
        *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_resolve_inside_the_repository(doc: str) -> None:
    path = ROOT / doc
    broken = []
    for target in LINK.findall(path.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http(s)://, mailto: and in-page anchors
        resolved = (path.parent / target.split("#", 1)[0]).resolve()
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize("doc", DOCS)
def test_no_reference_to_files_outside_the_repository(doc: str) -> None:
    assert "../shared" not in (ROOT / doc).read_text()


def test_the_project_documents_exist() -> None:
    for doc in ("docs/architecture.md", "CONTRIBUTING.md", "SECURITY.md"):
        assert (ROOT / doc).is_file(), doc
    readme = (ROOT / "README.md").read_text()
    for doc in ("docs/architecture.md", "CONTRIBUTING.md", "SECURITY.md"):
        assert f"]({doc})" in readme, f"README.md does not link {doc}"
