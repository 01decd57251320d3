"""Fetch stage: the encoded bytes of listed rows (see pipeline.sources)."""
from __future__ import annotations

from pipeline.stages.common import Batch, ensure_row_columns, fail_row, float_column, object_column, pending_rows, stage_timer, text


class FetchStage:
    """Reads the encoded bytes of listed rows (see pipeline.sources) into `bytes` / `reference_bytes`.

    Rows that already carry bytes in a `data` column (read on the driver, e.g. from a process-local
    filesystem) keep them. A row that cannot be read fails with the reason.
    """

    def __init__(self, allow_external_paths: bool = False) -> None:
        self.allow_external_paths = allow_external_paths

    def __call__(self, batch: Batch) -> Batch:
        from pipeline.sources import fetch_rows

        batch = ensure_row_columns(batch)
        data = object_column(batch, "bytes", b"")
        reference = object_column(batch, "reference_bytes", b"")
        times = float_column(batch, "time_decode_s")
        carried = batch.pop("data", None)
        to_fetch = []
        for index in pending_rows(batch):
            if carried is not None and carried[index] is not None and len(carried[index]):
                data[index] = bytes(carried[index])
            else:
                to_fetch.append(index)
        with stage_timer(times, to_fetch):
            listed = [{name: (text(batch[name][i]) if name in _TEXT_LOCATOR_COLUMNS else batch[name][i])
                       for name in _LOCATOR_COLUMNS if name in batch} for i in to_fetch]
            fetched = fetch_rows(listed, self.allow_external_paths) if listed else []
        for index, result in zip(to_fetch, fetched):
            if result.error:
                fail_row(batch, index, f"read: {result.error}")
                continue
            data[index] = result.data
            reference[index] = result.reference or b""
        batch.update(bytes=data, reference_bytes=reference, time_decode_s=times)
        return batch


_TEXT_LOCATOR_COLUMNS = ("listing_error", "kind", "fs_uri", "path", "column", "reference_column", "source")
_LOCATOR_COLUMNS = (*_TEXT_LOCATOR_COLUMNS, "row_group", "row_in_group")
