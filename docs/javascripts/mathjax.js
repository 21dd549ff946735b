// MathJax 3 for the whole site: the arithmatex spans of the Markdown pages (\( \) and \[ \]) and the $ … $ math
// of the notebooks' Markdown cells. Code blocks are never typeset.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: "tex2jax_ignore|mathjax_ignore",
  },
};
