"""Text as the UI shows it: prompts and answers are Markdown whose HTML stays literal text.

A prompt engineer's text is full of tags meant to be read, not rendered (`<context>`, `<output>`,
`<script>` in a request about web pages). Rendered as HTML, a sanitiser would drop them silently
and the user would not see what the model wrote; so `<` and `&` are escaped everywhere except inside
code spans and fenced blocks, which Markdown already shows literally (`>` alone opens no tag, and
stays free to start a quote).
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"^[ ]{0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;")


def _escape_outside_spans(text: str) -> str:
    out, pos = [], 0
    for m in _CODE_SPAN.finditer(text):
        out.append(_escape(text[pos:m.start()]))
        out.append(m.group(0))
        pos = m.end()
    out.append(_escape(text[pos:]))
    return "".join(out)


def literal_html(md: str) -> str:
    """Markdown with every HTML tag and entity shown as typed (code spans and fences left as they are)."""
    if not md or ("<" not in md and "&" not in md):
        return md
    lines = md.split("\n")
    out, prose, fence = [], [], None

    def flush():
        if prose:
            out.append(_escape_outside_spans("\n".join(prose)))
            prose.clear()

    for line in lines:
        m = _FENCE.match(line)
        if fence is None and m:
            flush()
            fence = m.group(1)[0] * len(m.group(1))
            out.append(line)
        elif fence is not None:
            out.append(line)  # inside a fence (an unclosed one runs to the end, as Markdown reads it)
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = None
        else:
            prose.append(line)
    flush()
    return "\n".join(out)
