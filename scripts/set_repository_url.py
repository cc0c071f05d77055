"""Point the package metadata at the public repository, for PyPI and the napari hub.

The project has no public repository yet, so ``pyproject.toml`` carries no ``[project.urls]`` and the
README shows its images by relative path (which GitHub renders but PyPI and the napari hub, which
shows the PyPI description, do not). Once the repository exists, run once and commit the result:

    python scripts/set_repository_url.py https://github.com/ORG/napari-gandl [--branch main]

It writes ``[project.urls]`` (Source Code, Bug Tracker, Documentation, User Support) into
``pyproject.toml`` and rewrites README image paths ``docs/images/x.png`` to
``https://raw.githubusercontent.com/ORG/napari-gandl/<branch>/docs/images/x.png`` and relative links to
``docs/*.md`` to ``<repo>/blob/<branch>/docs/*.md``. Running it again with the same URL changes nothing.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_GITHUB = re.compile(r"^https://github\.com/(?P<owner>[\w.-]+)/(?P<name>[\w.-]+?)/?$")


def urls_block(repo: str, branch: str) -> str:
    return ("[project.urls]\n"
            f'"Source Code" = "{repo}"\n'
            f'"Bug Tracker" = "{repo}/issues"\n'
            f'"Documentation" = "{repo}/tree/{branch}/docs"\n'
            f'"User Support" = "{repo}/issues"\n')


def set_urls(pyproject: str, repo: str, branch: str) -> str:
    """``pyproject`` text with one ``[project.urls]`` table (replaced if present), before the scripts."""
    block = urls_block(repo, branch)
    existing = re.compile(r"^\[project\.urls\]\n(?:(?!\[).*\n?)*", re.M)
    if existing.search(pyproject):
        return existing.sub(block + "\n", pyproject, count=1).replace("\n\n\n", "\n\n")
    anchor = "[project.optional-dependencies]"
    if anchor not in pyproject:
        raise SystemExit(f"pyproject.toml has no {anchor} table to put [project.urls] before")
    return pyproject.replace(anchor, block + "\n" + anchor, 1)


def absolute_links(readme: str, repo: str, branch: str) -> str:
    """README text with relative image paths and docs links made absolute."""
    m = _GITHUB.match(repo)
    raw = f"https://raw.githubusercontent.com/{m['owner']}/{m['name']}/{branch}" if m else f"{repo}/raw/{branch}"

    def image(mm: re.Match) -> str:
        return f"![{mm['alt']}]({raw}/{mm['path']})"

    def link(mm: re.Match) -> str:
        return f"[{mm['text']}]({repo}/blob/{branch}/{mm['path']})"

    readme = re.sub(r"!\[(?P<alt>[^\]]*)\]\((?!https?://)(?P<path>[^)\s]+)\)", image, readme)
    return re.sub(r"(?<!!)\[(?P<text>[^\]]+)\]\((?!https?://|#)(?P<path>[^)\s]+\.md)\)", link, readme)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("repo", help="https address of the public repository, e.g. https://github.com/ORG/napari-gandl")
    ap.add_argument("--branch", default="main", help="branch the README's images are served from (default main)")
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout to edit (default: this one)")
    a = ap.parse_args(argv)
    if not a.repo.startswith("https://"):
        ap.error(f"repo {a.repo!r}: give the https address of the repository")
    repo = a.repo.rstrip("/")
    for name, fix in (("pyproject.toml", set_urls), ("README.md", absolute_links)):
        path = a.root / name
        text = path.read_text(encoding="utf-8")
        new = fix(text, repo, a.branch)
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
