"""The book's MyST sources: every `$` of inline and display math is balanced.

Catches what a shell or a formatter does to ``$N`` or ``$K`` when a file is
written through an unquoted heredoc: an odd number of ``$`` in a paragraph, a
``$`` followed by a space and a word (the variable was eaten), or an empty ``$$``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks").glob("*.md")) + sorted((ROOT / "book").glob("*.md"))
FENCE = re.compile(r"^(```+|~~~+|:::+)")
CODE_DIRECTIVES = ("{code-cell}", "{code}", "{code-block}")


def prose_blocks(text: str) -> list[tuple[int, str]]:
    """Markdown paragraphs outside code fences and front matter, with their first line number.

    Math display blocks (``$$ ... $$``) stay inside their paragraph; directive
    fences (```` ```{admonition} ````) are prose too, code cells and code blocks are not.
    """
    lines = text.splitlines()
    if lines and lines[0].strip() == "---":  # front matter
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
        lines = [""] * (end + 1) + lines[end + 1 :]
    blocks, current, start = [], [], 0
    fence, directives = None, []  # an open code fence; the open prose directives
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if fence is not None:
            if stripped == fence:
                fence = None
            continue
        match = FENCE.match(stripped)
        if match:
            marker, rest = match.group(1), stripped[len(match.group(1)) :].strip()
            if not rest and directives and directives[-1] == marker:
                directives.pop()
            elif rest.startswith("{") and not rest.startswith(CODE_DIRECTIVES):
                directives.append(marker)
            else:
                fence = marker
            continue
        if line.strip() == "" and not (current and _open_display(current)):
            if current:
                blocks.append((start, "\n".join(current)))
            current = []
            continue
        if not current:
            start = number
        current.append(line)
    if current:
        blocks.append((start, "\n".join(current)))
    return blocks


def _open_display(block_lines: list[str]) -> bool:
    return sum(line.count("$$") for line in block_lines) % 2 == 1


def without_inline_code(text: str) -> str:
    return re.sub(r"`[^`]*`", "", text)


def math_problems(text: str) -> list[str]:
    """Every problem found in one MyST file, as 'line N: why'."""
    problems = []
    for line, block in prose_blocks(text):
        prose = without_inline_code(block).replace(r"\$", "")
        if re.search(r"\$\$\s*\$\$", prose):
            problems.append(f"line {line}: empty $$ $$")
        if prose.count("$") % 2:
            problems.append(f"line {line}: odd number of $ in {block[:80]!r}")
        inline = re.sub(r"\$\$.*?\$\$", "", prose, flags=re.S)
        for match in re.finditer(r"\$([^$]*)\$", inline):
            body = match.group(1)
            if not body.strip():
                problems.append(f"line {line}: empty inline math")
            elif body[0].isspace():
                problems.append(f"line {line}: '$' followed by a space (eaten?): ${body[:30]}$")
    return problems


@pytest.mark.parametrize("md", SOURCES, ids=[p.relative_to(ROOT).as_posix() for p in SOURCES])
def test_math_in_myst_source_is_balanced(md):
    assert math_problems(md.read_text()) == []


@pytest.mark.parametrize(
    "text",
    [
        "Storing it takes $N \\times D$ floats: 1.8 GB at  = 4096$.",
        "make $ perturbed copies of the model",
        "an empty display\n\n$$\n$$\n",
        "a pair $x$ and a lonely $ sign",
    ],
    ids=[
        "eaten_variable_leaves_odd_dollars",
        "eaten_variable_leaves_dollar_space",
        "empty_display",
        "unbalanced",
    ],
)
def test_eaten_or_unbalanced_math_is_reported(text):
    assert math_problems(text)


def test_balanced_math_code_and_display_blocks_pass():
    text = (
        "Inline $N = 4096$ and `$HOME` in code.\n\n"
        "$$\ng = \\frac{1}{N\\sigma}\\sum_j w_j \\epsilon_j\n$$\n\n"
        "```{code-cell} ipython3\nprint('$ 5')\n```\n"
    )
    assert math_problems(text) == []
