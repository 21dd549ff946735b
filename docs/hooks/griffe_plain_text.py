"""Griffe extension: keep the mathematics of docstrings as the characters written.

The library's docstrings are plain text with mathematics and never use Markdown links (names are in backticks), yet
two of their notations are Markdown syntax:

- `Φ[ρ](θ_j)`, the potential of ρ at θ_j, reads as a link to a page "θ_j" (which the strict build reports as
  broken);
- `f*(x)`, a starred function applied to an argument, opens an emphasis that a later `*` closes.

Escaping the parenthesis after `]` and a `*` before `(` renders the same characters. (Underscores, as in `∂_t w`, are
handled for all pages by the hook in `site.py`.)
"""

import re

import griffe

_RULES = ((re.compile(r"\]\("), r"]\\("), (re.compile(r"(?<!\*)\*\("), r"\\*("))


class PlainText(griffe.Extension):
    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            value = obj.docstring.value
            for pattern, replacement in _RULES:
                value = pattern.sub(replacement, value)
            obj.docstring.value = value
