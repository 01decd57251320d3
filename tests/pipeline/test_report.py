"""The HTML job report: counts, failure reasons, histograms and before/mask/after thumbnails."""
from __future__ import annotations

import re
import shutil

from pipeline.cli import main
from pipeline.config import JobConfig
from pipeline.job import run_job
from pipeline.report import build_html_report, failure_reason, summarize_json
from tests.conftest import REPO_ROOT


def _run_sample_job(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for stem in ("3096", "12084", "14037"):
        shutil.copy(REPO_ROOT / "samples" / "images" / f"{stem}.jpg", images)
        shutil.copy(REPO_ROOT / "samples" / "masks" / f"{stem}.png", masks)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    output = tmp_path / "out"
    run_job(JobConfig.from_mapping({
        "inputs": {"uris": [str(images)]},
        "masks": {"method": "given", "options": {"mask_dir": str(masks)}},
        "engine": {"name": "opencv"},
        "output": {"uri": str(output)},
    }))
    return output


def test_report_shows_counts_failures_metrics_and_thumbnails(ray_session, tmp_path):
    output = _run_sample_job(tmp_path)
    summary = summarize_json(str(output))
    assert summary["rows"] == 4 and summary["counts"] == {"ok": 3, "failed": 1}
    assert sum(summary["failures_by_reason"].values()) == 1

    document = build_html_report(str(output))
    assert "<h2>Counts</h2>" in document and "<h2>Failures by reason</h2>" in document
    assert "histogram of hole_ratio" in document
    # A sample grid with all three pictures per row (the originals come back through the saved listing).
    for label in ("before", "mask", "after"):
        assert len(re.findall(rf"<img src='data:image/jpeg;base64,[^']+' alt='{label} of ", document)) >= 3

    # The failed row itself: id, stage and message (not only a count by stage).
    assert summary["failed_rows"]["rows"][0]["id"] == "broken.jpg"
    assert summary["failed_rows"]["rows"][0]["stage"] == "decode" and summary["failed_rows"]["omitted"] == 0
    assert "<h2>Failed rows (1)</h2>" in document and "<td>broken.jpg</td><td>decode</td>" in document
    assert "BytesIO" not in document
    # Each figure says which way is better.
    assert "<th>better</th>" in document and "<td>color_delta_e</td><td>lower</td>" in document
    # No row appears in both grids.
    grids = dict(re.findall(r"<section><h2>(Sample|Worst[^<]*)</h2>(.*?)</section>", document))
    shown = [set(re.findall(r"<h4>([^<—]+?)(?: —[^<]*)?</h4>", body)) for body in grids.values()]
    assert len(shown) == 2 and shown[0] and shown[1] and not shown[0] & shown[1]

    assert main(["report", str(output)]) == 0
    assert (output / "report.html").read_text() .startswith("<!doctype html>")


def test_report_of_a_folder_without_a_job_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 1
    assert "no job manifest" in capsys.readouterr().out


def test_failure_reasons_group_by_kind():
    assert failure_reason("decode: cannot identify image file 'a.jpg'") == "decode"
    assert failure_reason("mask: hole ratio 0.93 above 0.5") == "mask"
    assert failure_reason("no colon here 123") == "no colon here N"


def test_sample_and_worst_grids_never_share_a_row():
    import pyarrow as pa

    from pipeline.report import ReportOptions, _select_rows

    table = pa.table({"status": ["ok"] * 6 + ["failed"], "seam_score": [1.0, 5.0, 2.0, 9.0, 1.5, 3.0, None]})
    sample, worst, metric = _select_rows(table, ReportOptions(sample_rows=12, worst_rows=12))
    assert metric == "seam_score" and worst == [3, 1, 5]  # at most half of the ok rows, worst first
    assert sorted(sample) == [0, 2, 4] and not set(sample) & set(worst)
