"""Builds the book and checks every page as a reader sees it, in headless Chromium.

    python scripts/check_book.py [--no-build] [--html DIR] [--chromium PATH]

For every chapter and book page, Chromium renders the built HTML offline (file://,
MathJax from the local copy that scripts/build_book.sh installs), and the script
fails on:

- MathJax errors (``mjx-merror``) or math that MathJax did not typeset;
- a visible raw ``$``, ``\\(``, ``\\[`` or LaTeX command outside math and code;
- an image whose file is missing;
- an internal link to a missing page or to a missing anchor.

It saves one full-page screenshot per page under ``_build/screenshots/`` (look at them).
Chromium: Debian's ``chromium`` package (``apt-get install -y chromium``).
"""

from __future__ import annotations

import argparse
import html.parser
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
SKIP_TEXT = {"script", "style", "pre", "code", "mjx-container", "textarea", "svg", "math"}
RAW_TEX = re.compile(r"\$|\\\(|\\\)|\\\[|\\\]|\\[A-Za-z]{2,}\b")


class Page(html.parser.HTMLParser):
    """Collects visible text outside math/code, images, links, ids and MathJax output."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.math_spans = 0
        self.typeset = 0
        self.errors = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if "math" in (attrs.get("class") or "").split():
            self.math_spans += 1
        if tag == "mjx-container":
            self.typeset += 1
        if tag == "mjx-merror":
            self.errors += 1
        if tag not in {"img", "br", "hr", "meta", "link", "input"}:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass

    def handle_data(self, data):
        if not SKIP_TEXT.intersection(self.stack):
            self.text.append(data)


def chromium_command(chromium: str) -> list[str]:
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--virtual-time-budget=10000",
        "--window-size=1280,1600",
    ]


def render(chromium: str, url: str) -> str:
    """The page's DOM after its scripts (MathJax) ran."""
    done = subprocess.run(
        chromium_command(chromium) + ["--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def screenshot(chromium: str, url: str, path: Path, *, height: int = 20000) -> None:
    """The whole page in one PNG: a tall window, cropped below the last content."""
    command = chromium_command(chromium)
    command[-1] = f"--window-size=1280,{height}"
    subprocess.run(
        command + [f"--screenshot={path}", url], capture_output=True, timeout=120, check=True
    )
    from PIL import Image  # a dependency of matplotlib; only needed here

    image = Image.open(path)
    gray = image.convert("L")
    bands = range(0, image.height - 200, 20)
    rows = [y for y in bands if gray.crop((0, y, image.width, y + 20)).getextrema()[0] < 200]
    if rows:
        image.crop((0, 0, image.width, min(image.height, rows[-1] + 120))).save(path)


def check_page(page: Page, path: Path) -> list[str]:
    """Every problem of one rendered page (its DOM parsed into ``page``)."""
    problems = []
    if page.errors:
        problems.append(f"{page.errors} MathJax error(s)")
    if page.math_spans and not page.typeset:
        problems.append(f"{page.math_spans} math elements, none typeset (no MathJax?)")
    visible = re.sub(r"\s+", " ", " ".join(page.text))
    for match in RAW_TEX.finditer(visible):
        context = visible[max(0, match.start() - 40) : match.end() + 40]
        problems.append(f"raw TeX or $ outside math: ...{context}...")
    for src in page.images:
        parts = urlsplit(src)
        if parts.scheme in ("http", "https", "data"):
            continue
        if not (path.parent / unquote(parts.path)).resolve().exists():
            problems.append(f"missing image {src}")
    for href in page.links:
        parts = urlsplit(href)
        if parts.scheme or href.startswith(("mailto:", "javascript:")):
            continue
        target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
        if not target.exists():
            problems.append(f"broken link {href}")
        elif parts.fragment and target.suffix == ".html":
            ids = set(re.findall(r'id="([^"]+)"', target.read_text(errors="replace")))
            if unquote(parts.fragment) not in ids:
                problems.append(f"broken anchor {href}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-build", action="store_true", help="check an existing build")
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args(argv)
    if not args.no_build:
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "build_book.sh"), "-W", "-n"], cwd=ROOT, check=True
        )
    shots = args.html.parent / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    pages = sorted((args.html / "notebooks").glob("*.html")) + sorted(
        (args.html / "book").glob("*.html")
    )
    if not pages:
        print(f"no pages under {args.html}", file=sys.stderr)
        return 1
    failed = 0
    for path in pages:
        name = f"{path.parent.name}_{path.stem}"
        url = path.resolve().as_uri()
        page = Page()
        page.feed(render(args.chromium, url))
        problems = check_page(page, path)
        failed += bool(problems)
        screenshot(args.chromium, url, shots / f"{name}.png")
        print(f"{'FAIL' if problems else 'ok  '} {name}: screenshot {shots / (name + '.png')}")
        for problem in problems[:20]:
            print(f"     {problem}")
    print(f"{len(pages) - failed}/{len(pages)} pages pass", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
