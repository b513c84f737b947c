"""Builds the book and checks every page as a reader sees it.

    python scripts/check_book.py [--no-build] [--html DIR] [--chromium PATH] [--static]

Two passes over every chapter and book page. The static pass reads the built HTML and
fails on:

- a raw Markdown pipe table (a line of ``|``-separated cells, or a ``|---|`` rule) in the
  rendered text: a table that a code cell printed as Markdown and the build left as text;
- a raw TeX delimiter (``\\(``, ``\\[``, ``$$``) outside math elements and code, and a
  page with math whose MathJax script is missing (then every formula shows as raw TeX);
- a code or output line wider than the column, ``MAX_COLUMNS`` characters (see there).

Then, where Chromium exists (or unless ``--static``), Chromium renders each page offline
(file://, MathJax from the local copy that scripts/build_book.sh installs) and the script
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
# The code column of sphinx-book-theme in a 1280-pixel window: 1280 px less the primary
# sidebar (20 %) and the secondary one (17 rem) is 752 px; less the article's and the
# <pre>'s 1 rem padding on each side, 688 px; at 14 px (0.875 em) a monospace character is
# 8.4 px wide, so 81 characters fit. Longer lines scroll sideways, cut off at the right.
MAX_COLUMNS = 80


# The install cell every chapter opens with is written by esmeta_core.runtime.bootstrap_cell
# (its pinned install URL alone is 62 characters); its lines are exempt until it fits.
def _generated_lines() -> set[str]:
    sys.path.insert(0, str(ROOT))
    from esmeta_core import runtime

    return {
        line
        for devices in (None, 8)
        for line in runtime.bootstrap_cell(cpu_devices=devices).splitlines()
        if len(line) > MAX_COLUMNS
    }


DELIMITER = re.compile(r"\\\(|\\\[|\$\$")
PIPE_ROW = re.compile(r"^\s*\|.*\|.*\|\s*$|^\s*\|?\s*:?-{3,}:?\s*\|")


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


class Source(html.parser.HTMLParser):
    """The built HTML as Sphinx wrote it: prose text outside math and code, the text of
    every ``<pre>`` (code cells, outputs, code blocks), math elements and scripts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool]] = []  # (tag, is a math element)
        self.prose: list[str] = []
        self.pres: list[str] = []
        self.scripts: list[str] = []
        self.math = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        is_math = "math" in (attrs.get("class") or "").split()
        self.math += is_math
        if tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])
        if tag == "pre":
            self.pres.append("")
        if tag not in {"img", "br", "hr", "meta", "link", "input"}:
            self.stack.append((tag, is_math))

    def handle_endtag(self, tag):
        if any(t == tag for t, _ in self.stack):
            while self.stack and self.stack.pop()[0] != tag:
                pass

    def handle_data(self, data):
        tags = {t for t, _ in self.stack}
        if "pre" in tags:
            self.pres[-1] += data
        elif not (SKIP_TEXT & tags or any(m for _, m in self.stack)):
            self.prose.append(data)


def static_problems(text: str, path: Path) -> list[str]:
    """Raw pipe tables, raw TeX and overflowing code lines in one page's built HTML."""
    page = Source()
    page.feed(text)
    problems = []
    for line in "".join(page.prose).splitlines():
        if PIPE_ROW.search(line):
            problems.append(f"raw pipe table (not rendered as a table): {line.strip()[:80]}")
    for match in DELIMITER.finditer(" ".join(page.prose)):
        problems.append(f"raw TeX delimiter {match.group()} outside math")
    mathjax = [s for s in page.scripts if "mathjax" in s.lower()]
    if page.math and not mathjax:
        problems.append(f"{page.math} math elements but no MathJax script: raw TeX")
    for src in mathjax:
        parts = urlsplit(src)
        if not parts.scheme and not (path.parent / unquote(parts.path)).resolve().exists():
            problems.append(f"MathJax script {src} is missing: math shows as raw TeX")
    exempt = _generated_lines()
    for block in page.pres:
        for line in block.splitlines():
            if len(line) > MAX_COLUMNS and line not in exempt:
                problems.append(f"{len(line)}-character line (column {MAX_COLUMNS}): {line[:60]}")
    return problems


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
    parser.add_argument("--chromium", default=shutil.which("chromium"))
    parser.add_argument("--static", action="store_true", help="only the static pass")
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
    browser = None if args.static else args.chromium
    if browser is None:
        print("static pass only (no Chromium: --chromium PATH or apt-get install chromium)")
    failed = 0
    for path in pages:
        name = f"{path.parent.name}_{path.stem}"
        problems = static_problems(path.read_text(errors="replace"), path)
        shot = ""
        if browser:
            url = path.resolve().as_uri()
            page = Page()
            page.feed(render(browser, url))
            problems += check_page(page, path)
            screenshot(browser, url, shots / f"{name}.png")
            shot = f": screenshot {shots / (name + '.png')}"
        failed += bool(problems)
        print(f"{'FAIL' if problems else 'ok  '} {name}{shot}")
        for problem in problems[:20]:
            print(f"     {problem}")
    print(f"{len(pages) - failed}/{len(pages)} pages pass", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
