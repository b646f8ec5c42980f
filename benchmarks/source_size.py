"""The sizes issue 20 caps: src/ lines, the node_parallel launcher with its job process, conf/
YAML lines, and the share of comment and docstring lines among src/'s non-blank lines.

    python benchmarks/source_size.py
"""

from __future__ import annotations

import io
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ("node_parallel_launcher.py", "_job_process.py")


def lines(paths) -> int:
    return sum(len(path.read_text().splitlines()) for path in paths)


def commented_lines(source: str) -> set[int]:
    """Numbers of the lines holding a comment or part of a docstring (a string standing alone)."""
    found: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            found.add(token.start[0])
        elif token.type == tokenize.STRING and token.line.strip().startswith(('"""', "'''", 'r"""')):
            found.update(range(token.start[0], token.end[0] + 1))
    return found


def main() -> None:
    sources = sorted((ROOT / "src").rglob("*.py"))
    launcher = [ROOT / "src/hydra_plugins/reslab_launchers" / name for name in LAUNCHER]
    non_blank = commented = 0
    for path in sources:
        text = path.read_text()
        rows = text.splitlines()
        non_blank += sum(1 for row in rows if row.strip())
        commented += sum(1 for number in commented_lines(text) if rows[number - 1].strip())
    print(f"src/ lines: {lines(sources)}")
    print(f"launcher + job process lines: {lines(launcher)}")
    print(f"conf/ YAML lines: {lines(sorted((ROOT / 'conf').rglob('*.yaml')))}")
    print(
        f"comments + docstrings: {commented} of {non_blank} non-blank src/ lines ({100 * commented / non_blank:.1f}%)"
    )


if __name__ == "__main__":
    main()
