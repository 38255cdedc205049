"""Extracts every ```python block from PROTOCOL.md's appendices and runs it.

Each appendix is an independent reimplementation, from the document alone,
that rebuilds the envelope known-answer vectors byte for byte. Run from the
repository root; needs the `cryptography` package.
"""
import re
import sys

text = open("PROTOCOL.md", encoding="utf-8").read()
start = text.index("## Appendix A")
blocks = re.findall(r"```python\n(.*?)```", text[start:], flags=re.S)
if len(blocks) < 2:
    sys.exit(f"expected the Python programs of appendices A and B, found {len(blocks)}")
for i, code in enumerate(blocks, start=1):
    print(f"-- appendix program {i}")
    exec(compile(code, f"PROTOCOL.md appendix program {i}", "exec"), {"__name__": "__main__"})
