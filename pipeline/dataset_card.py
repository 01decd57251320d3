"""The output root as a Hugging Face dataset folder: a dataset card (`README.md`) naming its data files
and features, so `datasets.load_dataset(OUT)` and the Hub load `data/*.parquet` — with `image` and
`mask` as Image features — and never the job's own files (`_job/`, `_shards/`, `images/`, the report).

The features come from `pipeline.output.writer.OUTPUT_SCHEMA`, the one description of an output row.
"""
from __future__ import annotations

import pyarrow as pa
import yaml

from pipeline.output.layout import DATA_DIR, DATASET_CARD_FILE
from pipeline.output.root import OutputRoot
from pipeline.output.writer import IMAGE_STRUCT, OUTPUT_SCHEMA

IMAGE_COLUMNS = ("image", "mask")  # `mask` is stored as PNG bytes; declared an Image, `datasets` decodes it

_HF_DTYPES = {pa.string(): "string", pa.binary(): "binary", pa.float32(): "float32", pa.float64(): "float64",
              pa.int64(): "int64", pa.int32(): "int32", pa.bool_(): "bool"}


def card_features(schema: pa.Schema = OUTPUT_SCHEMA) -> list[dict[str, str]]:
    """The card's `dataset_info.features` list: one {name, dtype} per output column."""
    features = []
    for item in schema:
        if item.name in IMAGE_COLUMNS or item.type == IMAGE_STRUCT:
            features.append({"name": item.name, "dtype": "image"})
        else:
            features.append({"name": item.name, "dtype": _HF_DTYPES[item.type]})
    return features


def dataset_card(config_hash: str) -> str:
    """The README.md text: YAML front matter (configs, features) and a short description."""
    front_matter = {
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": f"{DATA_DIR}/*.parquet"}]}],
        "dataset_info": {"features": card_features()},
        "tags": ["matpipe", "image-restoration", "inpainting"],
    }
    body = f"""\
# Restored images (matpipe)

Written by `matpipe run` (job config sha256 `{config_hash[:16]}…`). One row per input image in
`{DATA_DIR}/*.parquet`: `image` is the restored image, `mask` the hole that was filled (white = filled),
`status` is `ok`, `failed` (see `error`) or `skipped`, and the other columns hold the mask's provenance,
timings and quality figures.

```python
import datasets
rows = datasets.load_dataset("path/to/this/folder", split="train")
```

`_job/` and `_shards/` hold the job's plan and commit markers (they let a rerun resume); they are not
part of the dataset's data files.
"""
    return "---\n" + yaml.safe_dump(front_matter, sort_keys=False) + "---\n\n" + body


def ensure_dataset_card(root: OutputRoot, config_hash: str) -> None:
    """Write the card unless the output already has a README.md (a user's own card is kept)."""
    if not root.exists(DATASET_CARD_FILE):
        root.write_bytes(DATASET_CARD_FILE, dataset_card(config_hash).encode())
