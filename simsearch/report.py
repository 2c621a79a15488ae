"""A self-contained HTML page of one query and its results, thumbnails inlined from the image store."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

from simsearch.collection import Collection, SearchResult


def _text(path: str) -> str:
    """A path as HTML text. A file name that is not UTF-8 (its bytes kept as surrogates) shows U+FFFD for the bad
    bytes, as a terminal does, instead of making the page unwritable."""
    return html.escape(path.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))


def _img(jpeg: bytes | None, alt: str) -> str:
    if jpeg is None:
        return f'<div class="missing">{_text(alt)}</div>'
    data = base64.b64encode(jpeg).decode("ascii")
    return f'<img src="data:image/jpeg;base64,{data}" alt="{_text(alt)}">'


def render_html(
    collection: Collection, query_label: str, query_thumbnail: bytes | None, results: Sequence[SearchResult]
) -> str:
    """One page, no external files: the query on the left, then each result with its rank, score and path."""
    cards = "\n".join(
        f"<figure>{_img(collection.thumbnail(r.id), r.path)}"
        f"<figcaption><b>#{r.rank}</b> {r.score:.3f}<br><span>{_text(r.path)}</span></figcaption></figure>"
        for r in results
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>simsearch: {_text(query_label)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; background: #fafafa; color: #222; }}
main {{ display: flex; gap: 2rem; align-items: flex-start; }}
.results {{ display: flex; flex-wrap: wrap; gap: 1rem; }}
figure {{ margin: 0; width: 200px; background: #fff; padding: .5rem; border-radius: 6px; box-shadow: 0 1px 3px #0002; }}
figure img {{ width: 100%; height: 180px; object-fit: contain; background: #eee; }}
figcaption {{ font-size: .8rem; margin-top: .3rem; }}
figcaption span {{ color: #666; word-break: break-all; }}
.query {{ border: 3px solid #2a7; }}
.missing {{ height: 180px; display: grid; place-items: center; background: #eee; color: #999; }}
</style></head>
<body>
<h1>simsearch</h1>
<main>
<figure class="query">{_img(query_thumbnail, query_label)}<figcaption><b>query</b><br>
<span>{_text(query_label)}</span></figcaption></figure>
<section class="results">
{cards}
</section>
</main>
<p>{len(results)} results from {_text(str(collection.path))} ({html.escape(collection.manifest.model.id)}),
scores are cosine similarities.</p>
</body></html>
"""
