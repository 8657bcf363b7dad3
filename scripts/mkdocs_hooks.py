"""MkDocs hooks (mkdocs.yml ``hooks:``): render the Sphinx cross-reference roles of the docstrings.

polyfuse's docstrings write ``:class:`Encoded``` / ``:func:`~polyfuse.robustness.summarise```
(readable in the source and in ``help()``); mkdocstrings renders them as the literal role followed
by code. This keeps the code and drops the role; ``~a.b.C`` shows as ``C``, as Sphinx does.
"""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj|const):(?=<code>)")
SHORT = re.compile(r"<code>~(?:[\w]+\.)*(\w+)</code>")


def on_page_content(html: str, **kwargs: Any) -> str:
    return SHORT.sub(r"<code>\1</code>", ROLE.sub("", html))
