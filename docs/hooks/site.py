"""MkDocs hooks of the documentation site.

- Underscores never make emphasis. The docstrings are plain text with mathematics (`∂_t w_ℓ = −N_{ℓ−1} …`), where
  Markdown would read the text between two underscores as italics and drop the underscores; the pages use `*` for
  emphasis.
- The notebooks' own MathJax 2 loader (nbconvert's template) is dropped: the site loads MathJax 3 once for every page
  (`extra_javascript`), configured for the notebooks' `$ … $` math too, and two MathJax versions on one page fight
  over `window.MathJax`.
"""

import re

from markdown import Extension
from mkdocs.plugins import event_priority

_LOADER = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.DOTALL)


class _NoUnderscoreEmphasis(Extension):
    def extendMarkdown(self, md):
        delimiters = getattr(md, "delimiters", None)
        if delimiters is not None:  # Python-Markdown ≥ 3.11: one delimiter processor for * and _
            delimiters.remove("_")
        md.inlinePatterns.deregister("em_strong2", strict=False)  # earlier versions: its own pattern


@event_priority(100)  # before mkdocstrings reads the extensions for its own Markdown instance
def on_config(config):
    config.markdown_extensions.append(_NoUnderscoreEmphasis())
    return config


def on_page_content(html, page, config, files):
    if page.file.src_uri.endswith(".ipynb"):
        return _LOADER.sub("", html)
    return html
