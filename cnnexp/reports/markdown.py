"""Markdown reports and their self-contained HTML twin (figures embedded as data URIs)."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import markdown
import pandas as pd

_IMG_SRC = re.compile(r'src="([^":]+\.png)"')

_STYLE = """
body { font-family: sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; } td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f3f3f3; } img { max-width: 100%; } code { background: #f6f6f6; padding: 0 0.2em; }
"""


def table(frame: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """A GitHub-style Markdown table (pandas' own ``to_markdown``)."""
    if frame.empty:
        return "_(none)_"
    return frame.to_markdown(index=False, floatfmt=floatfmt)


def image(path: str, alt: str) -> str:
    return f"![{alt}]({path})"


def to_html(text: str, base_dir: Path, title: str) -> str:
    """Render Markdown to one HTML page whose PNG figures (paths relative to ``base_dir``) are inlined."""
    body = markdown.markdown(text, extensions=["tables", "fenced_code"])

    def inline(match: re.Match) -> str:
        path = base_dir / match.group(1)
        if not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'

    body = _IMG_SRC.sub(inline, body)
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def write_report(text: str, out_dir: Path, title: str, stem: str = "report") -> tuple[Path, Path]:
    """``report.md`` (figures linked beside it) and ``report.html`` (figures inside it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, html_path = out_dir / f"{stem}.md", out_dir / f"{stem}.html"
    md_path.write_text(text)
    html_path.write_text(to_html(text, out_dir, title))
    return md_path, html_path
