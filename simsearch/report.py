"""A self-contained HTML page of one query and its results, thumbnails inlined from the image store."""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from simsearch.collection import Collection, SearchResult


@dataclass(frozen=True)
class QueryCard:
    """A query image on the page: its label (a path, a URL, "-", "id:N"), its preview, and whether it was
    subtracted (`simsearch query --subtract`)."""

    label: str
    thumbnail: bytes | None
    subtracted: bool = False


def _text(path: str) -> str:
    """A path as HTML text. A file name that is not UTF-8 (its bytes kept as surrogates) shows U+FFFD for the bad
    bytes, as a terminal does, instead of making the page unwritable."""
    return html.escape(path.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))


def _wrapped(path: str) -> str:
    """A path as HTML text that a narrow card wraps after a folder separator, never inside a name that fits."""
    return "/<wbr>".join(_text(part) for part in path.split("/"))


def _href(label: str) -> str | None:
    """Where a card links: a URL as it is, a file as a file:// URI (the original, not the preview)."""
    if label.lower().startswith(("http://", "https://")):
        return label
    if label == "-" or label.startswith("id:"):
        return None
    try:
        return Path(os.path.abspath(os.path.expanduser(label))).as_uri()
    except ValueError:
        return None


def _img(jpeg: bytes | None, alt: str) -> str:
    if jpeg is None:
        return f'<div class="missing">{_text(alt)}</div>'
    data = base64.b64encode(jpeg).decode("ascii")
    return f'<img src="data:image/jpeg;base64,{data}" alt="{_text(alt)}">'


def _card(jpeg: bytes | None, path: str, caption: str, css_class: str = "", href: str | None = None) -> str:
    picture, name = _img(jpeg, path), f"<span>{_wrapped(path)}</span>"
    if href is not None:
        link = html.escape(href, quote=True)
        picture, name = f'<a href="{link}">{picture}</a>', f'<a href="{link}">{name}</a>'
    attribute = f' class="{css_class}"' if css_class else ""
    return f"<figure{attribute}>{picture}<figcaption>{caption}<br>{name}</figcaption></figure>"


def render_html(
    collection: Collection,
    query_label: str,
    query_thumbnail: bytes | None,
    results: Sequence[SearchResult],
    *,
    more_queries: Sequence[QueryCard] = (),
) -> str:
    """One page, no external files: the query (and `more_queries`, combined into one search) first, then each result
    with its rank, score and path, all cards at one size; a card links to its original file."""
    queries = [QueryCard(query_label, query_thumbnail), *more_queries]
    cards = [
        _card(
            q.thumbnail,
            q.label,
            "<b>minus</b>" if q.subtracted else "<b>query</b>",
            "query minus" if q.subtracted else "query",
            _href(q.label),
        )
        for q in queries
    ]
    cards += [
        _card(collection.thumbnail(r.id), r.path, f"<b>#{r.rank}</b> {r.score:.4f}", href=_href(r.path))
        for r in results
    ]
    title = " + ".join(q.label for q in queries if not q.subtracted)
    body = "\n".join(cards)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>simsearch: {_text(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; background: #fafafa; color: #222; }}
main {{ display: grid; grid-template-columns: repeat(auto-fill, 200px); gap: 1rem; }}
figure {{ margin: 0; background: #fff; padding: .5rem; border-radius: 6px; box-shadow: 0 1px 3px #0002;
  box-sizing: border-box; min-width: 0; }}
figure img {{ display: block; width: 100%; height: 180px; object-fit: contain; background: #eee; }}
figcaption {{ font-size: .8rem; margin-top: .3rem; overflow-wrap: break-word; }}
figcaption span {{ color: #666; }}
figcaption a {{ color: inherit; text-decoration: none; }}
figcaption a:hover {{ text-decoration: underline; }}
.query {{ outline: 3px solid #2a7; }}
.query.minus {{ outline-color: #c44; }}
.missing {{ height: 180px; display: grid; place-items: center; background: #eee; color: #999; }}
</style></head>
<body>
<h1>simsearch</h1>
<main>
{body}
</main>
<p>{len(results)} results from {_text(str(collection.path))} ({html.escape(collection.manifest.model.id)}),
scores are cosine similarities (1 for the same image).</p>
</body></html>
"""
