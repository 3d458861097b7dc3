"""Write every runnable ```python example of the docs to a folder, one module per block.

Used by ``.ci/run`` so that ``mypy --strict`` and ``pyright`` (strict) check the
documented examples exactly as a reader would paste them::

    python scripts/extract_docs_examples.py OUT_DIR

The blocks are the ones ``tests/test_docs.py`` executes (same extraction, its
``EXAMPLES``), minus those tagged ``no-run`` (sketches needing services we do
not run).  Each file is named after its page and block, e.g.
``docs_steps_block3.py``, and starts with a comment giving the Markdown line, so
an error is easy to trace back to the page.  Exits non-zero if none is found.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python scripts/extract_docs_examples.py OUT_DIR", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    from tests.test_docs import EXAMPLES

    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for example in EXAMPLES:
        if "no-run" in example.tags:
            continue
        name = re.sub(r"\W", "_", example.path.removesuffix(".md")) + f"_block{example.index}.py"
        header = f"# {example.path}, block {example.index} (line {example.line})\n"
        (out / name).write_text(header + example.code, encoding="utf-8")
        written += 1
    if not written:
        print("no docs examples found", file=sys.stderr)
        return 1
    print(f"{written} docs examples written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
