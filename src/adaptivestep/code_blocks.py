"""The code of a response: its fenced code block, found by one parser that the splitter and the checker share.

Rules: the first block tagged ```` ```python```` (or ``python3`` / ``py``) is the code, else the first fenced
block of any language; an unclosed block (a truncated response) runs to the end of the text; an inline
```` ```x``` ```` or a fence with no content line is no block. :func:`code_span` gives the block's character
range, :func:`extract_code` its text (the whole response when there is no block), so the sandbox runs exactly
the code that :func:`adaptivestep.split.code_region` tags. :func:`program_key` is what a majority vote counts.
"""

from __future__ import annotations

import ast
import re
import warnings
from typing import NamedTuple

_FENCE = re.compile(r"```")
PYTHON_TAGS = ("python", "python3", "py")


class Block(NamedTuple):
    """One fenced block: ``tag`` (language, lower case, may be ""), content ``text[start:end]`` (characters;
    the fence lines are outside it)."""

    tag: str
    start: int
    end: int


def fenced_blocks(text: str) -> list[Block]:
    """Every fenced block of ``text`` in order (fences pair up first with second, third with fourth, ...).

    >>> fenced_blocks("a\\n```py\\nx = 1\\n```\\nb")
    [Block(tag='py', start=8, end=14)]
    """
    fences = [m.start() for m in _FENCE.finditer(text)]
    blocks: list[Block] = []
    for j in range(0, len(fences), 2):
        open_at = fences[j] + 3
        eol = text.find("\n", open_at)
        close_at = fences[j + 1] if j + 1 < len(fences) else len(text)
        if eol == -1 or eol >= close_at:  # inline ```x``` or a fence with no content line
            continue
        blocks.append(Block(text[open_at:eol].strip().lower(), eol + 1, close_at))
    return blocks


def code_span(text: str) -> tuple[int, int] | None:
    """Character range ``(start, end)`` of the code block (rules in the module docstring); None without one.

    >>> text = "Here:\\n```python\\nx = 1\\n```\\nDone."
    >>> a, b = code_span(text); text[a:b]
    'x = 1\\n'
    """
    blocks = fenced_blocks(text)
    if not blocks:
        return None
    block = next((b for b in blocks if b.tag in PYTHON_TAGS), blocks[0])
    return (block.start, block.end)


def extract_code(text: str) -> str:
    """The candidate program of a response: the code block's content, else the whole text.

    >>> extract_code("Here:\\n```python\\nx = 1\\n```\\nDone.")
    'x = 1\\n'
    >>> extract_code("def f():\\n    return 1")
    'def f():\\n    return 1'
    """
    span = code_span(text)
    return text if span is None else text[span[0] : span[1]]


def program_key(code: str) -> str:
    """A program in canonical form, so that programs that differ only in layout, comments or docstrings are equal.

    Python source is parsed and unparsed (:func:`ast.unparse`): comments, blank lines, spacing, quote style and
    redundant parentheses go, and so does every docstring (a string constant that opens a module, class or
    function body; a body left empty gets ``pass``). Names, literals and the block structure stay: ``x + 1``
    and ``x + 2`` differ, and so do a statement inside a loop and the same statement after it. Text that does
    not parse (a truncated response) is compared by its non-blank lines, right-stripped.

    >>> program_key('def f(x):\\n    "Add one."\\n    return (x+1)  # done\\n')
    'def f(x):\\n    return x + 1'
    >>> program_key("def f(x:\\n    return x   \\n\\n")
    'def f(x:\\n    return x'
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)  # an invalid escape in a string literal (3.12+),
            warnings.simplefilter("ignore", DeprecationWarning)  # the same on 3.11
            tree = ast.parse(code)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and _docstring(
                    node.body):
                node.body = node.body[1:] or [ast.Pass()]
        return ast.unparse(tree)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return "\n".join(line.rstrip() for line in code.splitlines() if line.strip())


def _docstring(body: list[ast.stmt]) -> bool:
    first = body[0] if body else None
    return isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
