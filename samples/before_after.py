"""Make samples/before-after.jpg (README's picture) from a job output: before / mask / after per row.

    python samples/before_after.py out/samples [--ids 3096.jpg 21077.jpg] [--output samples/before-after.jpg]

"Before" is the row's source file, "mask" the hole the job found (white = filled), "after" the restored
image, each as the job wrote them into OUTPUT/data/*.parquet.
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
ROW_HEIGHT = 240
GAP = 6


def triple(row: dict) -> list[Image.Image]:
    before = Image.open(row["source"]).convert("RGB")
    mask = Image.open(io.BytesIO(row["mask"])).convert("RGB")
    after = Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")
    scale = ROW_HEIGHT / before.height
    size = (round(before.width * scale), ROW_HEIGHT)
    return [picture.resize(size, Image.LANCZOS) for picture in (before, mask, after)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="a job output folder (matpipe run --output)")
    parser.add_argument("--ids", nargs="+", default=["3096.jpg", "21077.jpg"])
    parser.add_argument("--output", dest="picture", type=Path, default=HERE / "before-after.jpg")
    args = parser.parse_args()
    rows = {row["id"]: row for row in pq.read_table(args.output / "data").to_pylist()}
    lines = [triple(rows[row_id]) for row_id in args.ids]
    label_height = 22
    width = max(sum(p.width for p in line) + GAP * (len(line) - 1) for line in lines)
    height = label_height + sum(line[0].height for line in lines) + GAP * (len(lines) - 1)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=16)
    x = 0
    for label, picture in zip(("before", "mask found (consistent)", "after"), lines[0]):
        draw.text((x + 4, 2), label, fill="black", font=font)
        x += picture.width + GAP
    y = label_height
    for line in lines:
        x = 0
        for picture in line:
            canvas.paste(picture, (x, y))
            x += picture.width + GAP
        y += line[0].height + GAP
    canvas.save(args.picture, quality=85, optimize=True)
    print(f"{args.picture}: {canvas.width}×{canvas.height}")


if __name__ == "__main__":
    main()
