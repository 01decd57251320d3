"""A self-contained HTML report of a finished (or partly finished) job output: counts, failure reasons,
metric histograms, and before / mask / after thumbnails for a sample of rows and for the worst-scoring ones.

It reads only the output folder (committed shards, the saved listing and report), so it works without
Prefect and on any output a `matpipe run` left behind.
"""
from __future__ import annotations

import base64
import html
import io
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.failures import DEFAULT_LIMIT, failed_rows
from pipeline.output.layout import HTML_REPORT_FILE, LISTING_FILE, REPORT_FILE, TEMPLATE_FILE
from pipeline.output.shards import committed_tables
from pipeline.sources import fetch_rows
from pipeline.output.root import OutputRoot
from pipeline.output.writer import METRIC_COLUMNS

# The columns a report reads for every row: no image, mask or provenance bytes.
SUMMARY_COLUMNS = ("id", "status", "error", "hole_ratio", *METRIC_COLUMNS)
# Metrics where a higher value means a worse restoration, used to pick the "worst" rows.
WORST_BY = ("seam_score", "rerun_hole_ratio", "color_delta_e")
HISTOGRAM_BINS = 20

# Which way each figure is better, in words a reader of the report needs (see pipeline/metrics.py).
METRIC_DIRECTIONS: dict[str, tuple[str, str]] = {
    "hole_ratio": ("neither", "share of the image that was filled"),
    "seam_score": ("≈ 1", "gradient on the hole's outline over its neighbourhood's; ≫ 1 = a visible seam or halo"),
    "color_delta_e": ("lower", "CIE76 colour difference between the fill's edge and its surroundings; "
                               "below ~2.3 is not noticeable"),
    "texture_ratio": ("≈ 1", "fine texture of the fill over its surroundings'; < 1 = blurrier, > 1 = noisier"),
    "residual_hole_ratio": ("lower", "share of the hole left unfilled"),
    "rerun_hole_ratio": ("lower", "share of the hole the mask generator still finds on the restored image; "
                                  "0 = the watermark is gone"),
    "psnr": ("higher", "peak signal-to-noise ratio against the reference image, in dB"),
    "ssim": ("higher", "structural similarity with the reference image; 1 = identical"),
}


@dataclass(frozen=True)
class ReportOptions:
    sample_rows: int = 12
    worst_rows: int = 12
    failed_rows: int = 50
    thumbnail_px: int = 192
    title: str = "matpipe job report"


def failure_reason(error: str) -> str:
    """Group error texts by their kind: the text before the first ':' with numbers and paths blanked."""
    head = error.split(":", 1)[0].strip() or error.strip()
    head = re.sub(r"\d+", "N", head)
    return head[:120]


def _thumbnail(data: bytes | None, size: int) -> str | None:
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (size, size))  # JPEG decodes at a reduced scale: cheap for big photos
            image = image.convert("RGB")
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=85)
    except Exception:  # a thumbnail is decoration: an unreadable image must not break the report
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _histogram_svg(values: np.ndarray, name: str, width: int = 320, height: int = 120) -> str:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return f"<p class='muted'>{html.escape(name)}: no values</p>"
    low, high = float(finite.min()), float(finite.max())
    if high <= low:
        high = low + 1e-9
    counts, edges = np.histogram(finite, bins=HISTOGRAM_BINS, range=(low, high))
    peak = max(int(counts.max()), 1)
    bar_w = width / HISTOGRAM_BINS
    bars = "".join(
        f"<rect x='{i * bar_w:.1f}' y='{height - 20 - (c / peak) * (height - 30):.1f}' width='{bar_w - 1:.1f}' "
        f"height='{(c / peak) * (height - 30):.1f}'><title>{edges[i]:.4g}–{edges[i + 1]:.4g}: {c}</title></rect>"
        for i, c in enumerate(counts)
    )
    return (
        f"<figure><svg width='{width}' height='{height}' role='img' aria-label='histogram of {html.escape(name)}'>"
        f"{bars}<text x='0' y='{height - 4}'>{low:.3g}</text>"
        f"<text x='{width}' y='{height - 4}' text-anchor='end'>{high:.3g}</text></svg>"
        f"<figcaption>{html.escape(name)} (n={finite.size}, median {np.median(finite):.3g})</figcaption></figure>"
    )


def _select_rows(table: pa.Table, options: ReportOptions) -> tuple[list[int], list[int], str | None]:
    """(sample, worst, the metric ranking the worst): disjoint, so no row is shown twice.

    The worst rows are picked first, from at most half of the ok rows (with six rows "worst" would
    otherwise be the whole dataset again); the sample is an even spread over the remaining ok rows.
    """
    status = table.column("status").to_pylist()
    ok_rows = [i for i, s in enumerate(status) if s == "ok"]
    worst_metric = next(
        (m for m in WORST_BY if m in table.column_names and table.column(m).null_count < table.num_rows), None
    )
    worst: list[int] = []
    if worst_metric:
        scores = table.column(worst_metric).to_numpy(zero_copy_only=False).astype(float)
        candidates = [i for i in ok_rows if math.isfinite(scores[i])]
        worst = sorted(candidates, key=lambda i: -scores[i])[: min(options.worst_rows, len(ok_rows) // 2)]
    chosen = set(worst)
    rest = [i for i in ok_rows if i not in chosen]
    # An even spread over the dataset, not only its first rows.
    step = max(1, len(rest) // max(options.sample_rows, 1))
    sample = rest[::step][: options.sample_rows]
    return sample, worst, worst_metric


def _failed_rows_section(table: pa.Table, limit: int) -> str:
    failed = failed_rows(table, limit)
    if not failed.total:
        return ""
    rows = "".join(f"<tr><td>{html.escape(row.id)}</td><td>{html.escape(row.stage)}</td>"
                   f"<td class='message'>{html.escape(row.message)}</td></tr>" for row in failed.rows)
    more = (f"<p class='muted'>… and {failed.omitted} more failed row(s); every one is in the output's "
            "<code>status</code> / <code>error</code> columns.</p>") if failed.omitted else ""
    return (f"<section><h2>Failed rows ({failed.total})</h2><table><tr><th>id</th><th>stage</th><th>message</th></tr>"
            f"{rows}</table>{more}</section>")


def _directions_table(metrics: Sequence[str]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(m)}</td><td>{html.escape(METRIC_DIRECTIONS[m][0])}</td>"
        f"<td class='message'>{html.escape(METRIC_DIRECTIONS[m][1])}</td></tr>"
        for m in metrics if m in METRIC_DIRECTIONS)
    return (f"<table><tr><th>figure</th><th>better</th><th>what it measures</th></tr>{rows}</table>" if rows else "")


def _originals(root: OutputRoot, ids: Sequence[str]) -> dict[str, bytes]:
    """The input bytes of the given ids, through the listing the job saved (missing ones are skipped)."""
    if not ids or not root.exists(LISTING_FILE):
        return {}
    with root.filesystem.open_input_file(root.path(LISTING_FILE)) as handle:
        listing = pq.read_table(handle)
    wanted = set(ids)
    rows = [row for row in listing.to_pylist() if row["id"] in wanted]
    fetched = fetch_rows(rows)
    return {row["id"]: result.data for row, result in zip(rows, fetched) if result.data}


def _grid(title: str, table: pa.Table, indices: Sequence[int], originals: dict[str, bytes],
          pictures: dict[str, dict[str, Any]], size: int, metric: str | None) -> str:
    if not indices:
        return ""
    cells = []
    for i in indices:
        row_id = str(table.column("id")[i].as_py())
        picture = pictures.get(row_id, {})
        image = picture.get("image") or {}
        triple = (
            ("before", _thumbnail(originals.get(row_id), size)),
            ("mask", _thumbnail(picture.get("mask"), size)),
            ("after", _thumbnail(image.get("bytes"), size)),
        )
        thumbnails = "".join(
            f"<div><img src='{src}' alt='{label} of {html.escape(row_id)}'><span>{label}</span></div>"
            if src else f"<div class='missing'><span>{label}: n/a</span></div>"
            for label, src in triple
        )
        score = ""
        if metric is not None:
            value = table.column(metric)[i].as_py()
            score = f" — {html.escape(metric)} {value:.4g}" if value is not None else ""
        cells.append(f"<article><h4>{html.escape(row_id)}{score}</h4><div class='triple'>{thumbnails}</div></article>")
    return f"<section><h2>{html.escape(title)}</h2><div class='grid'>{''.join(cells)}</div></section>"


STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1400px}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}.muted{color:#888}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(620px,1fr));gap:1rem}
article{border:1px solid #ddd;border-radius:6px;padding:.5rem}article h4{margin:.2rem 0 .5rem;font-size:.9rem}
.triple{display:flex;gap:.4rem}.triple div{display:flex;flex-direction:column;align-items:center;font-size:.8rem}
.triple img{max-width:192px;max-height:192px;border:1px solid #eee}.missing{width:192px;color:#999}
figure{display:inline-block;margin:.5rem 1rem}svg rect{fill:#4a7bd0}svg text{font-size:10px;fill:#555}
.message{text-align:left;max-width:60rem;word-break:break-word}
.warn{background:#fff3cd;border:1px solid #e0c060;padding:.6rem;border-radius:4px}
"""


def build_html_report(output_uri: str, options: ReportOptions = ReportOptions()) -> str:
    """Render the report of the job output at `output_uri` as one HTML document (images inlined)."""
    root = OutputRoot(output_uri)
    # Everything but the bulky columns; the images and masks only of the rows shown (a large dataset's
    # bytes never come to this process).
    table = committed_tables(output_uri, columns=SUMMARY_COLUMNS)
    job = root.read_json(REPORT_FILE) if root.exists(REPORT_FILE) else {}

    status_counts = Counter(table.column("status").to_pylist())
    reasons = Counter(
        failure_reason(str(e)) for s, e in zip(table.column("status").to_pylist(), table.column("error").to_pylist())
        if s == "failed" and e
    )
    sample, worst, worst_metric = _select_rows(table, options)
    shown_ids = [str(table.column("id")[i].as_py()) for i in {*sample, *worst}]
    originals = _originals(root, shown_ids)
    pictures = {row["id"]: row for row in committed_tables(output_uri, ("id", "image", "mask"), shown_ids).to_pylist()}

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(options.title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(options.title)}</h1>"
             f"<p>Output <code>{html.escape(output_uri)}</code></p>"]
    if job.get("engine_warning"):
        parts.append(f"<p class='warn'>{html.escape(str(job['engine_warning']))}</p>")

    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>"
                   for k, v in [("rows", table.num_rows)] + sorted(status_counts.items()))
    parts.append(f"<section><h2>Counts</h2><table><tr><th>status</th><th>rows</th></tr>{rows}</table>")
    if job:
        facts = {k: job.get(k) for k in ("engine", "checkpoint_sha256", "rows_per_s", "wall_s", "shards_total",
                                          "finished_at") if job.get(k) not in (None, "")}
        parts.append("<table>" + "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                                         for k, v in facts.items()) + "</table>")
    parts.append("</section>")

    parts.append(_failed_rows_section(table, options.failed_rows))
    from pipeline.watermark.report import watermark_section

    parts.append(watermark_section(root.read_bytes(TEMPLATE_FILE) if root.exists(TEMPLATE_FILE) else None))

    if reasons:
        reason_rows = "".join(f"<tr><td>{html.escape(r)}</td><td>{n}</td></tr>" for r, n in reasons.most_common())
        parts.append(f"<section><h2>Failures by reason</h2><table><tr><th>reason</th><th>rows</th></tr>"
                     f"{reason_rows}</table></section>")

    shown = [m for m in ("hole_ratio", *METRIC_COLUMNS)
             if m in table.column_names and table.column(m).null_count < table.num_rows]
    histograms = [_histogram_svg(table.column(m).to_numpy(zero_copy_only=False).astype(float), m) for m in shown]
    if histograms:
        parts.append(f"<section><h2>Metrics</h2>{_directions_table(shown)}{''.join(histograms)}</section>")

    parts.append(_grid("Sample", table, sample, originals, pictures, options.thumbnail_px, None))
    if worst_metric:
        better = METRIC_DIRECTIONS.get(worst_metric, ("", ""))[0]
        parts.append(_grid(f"Worst by {worst_metric} (highest first; better is {better})", table, worst, originals,
                           pictures, options.thumbnail_px, worst_metric))
    parts.append("</body></html>")
    return "".join(parts)


def write_html_report(output_uri: str, destination: str | None = None, options: ReportOptions = ReportOptions()) -> str:
    """Write the report (default: `report.html` in the output root); returns where it went."""
    document = build_html_report(output_uri, options).encode()
    root = OutputRoot(output_uri)
    if destination is None:
        root.write_bytes(HTML_REPORT_FILE, document)
        return root.path(HTML_REPORT_FILE)
    with open(destination, "wb") as handle:
        handle.write(document)
    return destination


def summarize_json(output_uri: str, failed_limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
    """Counts, failure reasons and the first `failed_limit` failed rows as plain data (for flows and CI)."""
    table = committed_tables(output_uri, columns=("id", "status", "error"))
    statuses = table.column("status").to_pylist()
    errors = table.column("error").to_pylist()
    return {
        "rows": table.num_rows,
        "counts": dict(Counter(statuses)),
        "failures_by_reason": dict(Counter(failure_reason(str(e)) for s, e in zip(statuses, errors)
                                           if s == "failed" and e)),
        "failed_rows": failed_rows(table, failed_limit).to_dict(),
    }


__all__ = ["ReportOptions", "build_html_report", "write_html_report", "summarize_json", "failure_reason"]
