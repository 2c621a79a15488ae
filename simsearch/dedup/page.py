"""A self-contained HTML page of duplicate groups: each group's thumbnails, the kept file first, with scores, their
calibrated meaning and what would be removed (thumbnails inlined from the image store, like `query --html`)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from simsearch.dedup.results import DedupReport
from simsearch.report import _img, _text

if TYPE_CHECKING:
    from simsearch.collection import Collection

__all__ = ["render_groups"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; background: #fafafa; color: #222; }
section { margin-bottom: 1.5rem; padding: .8rem; background: #fff; border-radius: 6px; box-shadow: 0 1px 3px #0002; }
.members { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; width: 200px; }
figure img { width: 100%; height: 160px; object-fit: contain; background: #eee; }
figcaption { font-size: .8rem; margin-top: .3rem; }
figcaption span { color: #666; word-break: break-all; }
.keep { outline: 3px solid #2a7; }
.remove { outline: 3px solid #c33; opacity: .85; }
.protected { outline: 3px solid #37c; }
.missing { height: 160px; display: grid; place-items: center; background: #eee; color: #999; }
"""


def render_groups(col: Collection, report: DedupReport) -> str:
    """One page, no external files: one section per group, the kept file outlined green, the others red (to
    remove) or blue (kept: in a reference folder)."""
    sections = []
    for number, group in enumerate(report.groups, 1):
        removed = {r.id for r in group.remove}
        cards = []
        for m in group.members:
            role = "keep" if m.record.id == group.kept.id else "remove" if m.record.id in removed else "protected"
            meaning = f" &middot; {html.escape(m.meaning)}" if m.meaning else ""
            label = "exact copy" if m.exact and role != "keep" else f"{m.score:.3f}{meaning}"
            cards.append(
                f'<figure class="{role}">{_img(col.thumbnail(m.record.id), m.record.path)}'
                f"<figcaption><b>{role}</b> {label if role != 'keep' else ''}<br>"
                f"{m.record.width}x{m.record.height}, {m.record.size:,} bytes<br>"
                f"<span>{_text(m.record.path)}</span></figcaption></figure>"
            )
        sections.append(
            f"<section><h2>Group {number} ({group.kind}, {len(group.members)} files)</h2>"
            f"<p>{_text(group.reason)}; weakest pair {group.weakest:.3f}</p>"
            f'<div class="members">{"".join(cards)}</div></section>'
        )
    body = "\n".join(sections) or "<p>No duplicates found.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>simsearch: duplicates in {_text(str(col.path))}</title>
<style>{_STYLE}</style></head>
<body>
<h1>Duplicates</h1>
<p>{len(report.groups)} groups among {report.images} images of {_text(str(col.path))}; threshold
{report.threshold.value:.3f} ({_text(report.threshold.origin)}); keep rule {html.escape(report.keep_rule)};
{len(report.to_remove())} files would be removed. Every pair in a group scores at least the threshold.</p>
{body}
</body></html>
"""
