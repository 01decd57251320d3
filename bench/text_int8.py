"""Does int8 quantisation speed up the text detector on this CPU? Prints forward time fp32 vs int8.

The PP-OCRv6 small detector (rapidocr's wheel) is quantised with ONNX Runtime's static quantiser
(per-channel int8 weights, QDQ and QOperator formats, opset raised from 11 to 17 first: QDQ's
per-channel `axis` needs opset >= 13) and calibrated on synthetic pictures: procedural backgrounds with
overlay text drawn on them, so no benchmark photo is seen by the calibration. Each model's forward is
timed in CPU time with one thread, interleaved, and compared with the float32 model on other synthetic
pictures: the share of text pixels (probability > 0.3) both agree on (IoU of the bitmaps).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python bench/text_int8.py [--size 768x1024] [--repeats 7]

Needs the `onnx` package (not a dependency of matpipe: int8 did not pay on the machines measured, see
README's text section); int8 convolutions only pay on CPUs with VNNI (AVX512-VNNI / AVX-VNNI).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # before bench/, whose pipeline.py would shadow
from pipeline.masks.text_detector import DETECTOR_MODELS, to_network_input  # noqa: E402

WORDS = ("SAMPLE", "PREVIEW", "© studio 2024", "stock photo", "DRAFT", "watermark", "Copyright")


def synthetic_picture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """uint8 H×W×3 RGB: a smooth colour field, blurred blobs and noise, with 1-3 lines of text drawn over."""
    height, width = shape
    low = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
    picture = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(5, 20))):
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(picture, center, int(rng.integers(10, max(11, width // 6))), rng.uniform(0, 255, 3).tolist(), -1)
    picture = cv2.GaussianBlur(picture, (0, 0), float(rng.uniform(1, 6)))
    picture += rng.normal(0, rng.uniform(2, 20), picture.shape).astype(np.float32)
    for _ in range(int(rng.integers(1, 4))):
        text = str(rng.choice(WORDS))
        scale = float(rng.uniform(0.8, 3.0))
        origin = (int(rng.integers(0, width // 2)), int(rng.integers(40, height - 10)))
        layer = np.zeros((height, width), np.uint8)
        cv2.putText(layer, text, origin, int(rng.integers(0, 8)), scale, 255, max(1, int(scale * 2)), cv2.LINE_AA)
        alpha = layer.astype(np.float32)[..., None] / 255.0 * rng.uniform(0.5, 0.9)
        colour = 255.0 if rng.random() < 0.5 else 0.0
        picture = picture * (1 - alpha) + colour * alpha
    return np.clip(picture, 0, 255).astype(np.uint8)


def network_inputs(seed: int, count: int, shape: tuple[int, int], model_name: str) -> list[np.ndarray]:
    model = DETECTOR_MODELS[model_name]
    rng = np.random.default_rng(seed)
    return [to_network_input(synthetic_picture(rng, shape), model)[None] for _ in range(count)]


def quantise(source: Path, target: Path, fmt: str, calibration: list[np.ndarray], workdir: Path) -> None:
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    upgraded, prepared = workdir / "opset17.onnx", workdir / "prepared.onnx"
    if not prepared.exists():
        onnx.save(version_converter.convert_version(onnx.load(str(source)), 17), str(upgraded))
        # Symbolic shape inference cannot resolve the detector's dynamic sizes; ONNX's own suffices.
        quant_pre_process(str(upgraded), str(prepared), skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[np.ndarray] = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {"x": batch}

    quantize_static(str(prepared), str(target), Reader(),
                    quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                    per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--detector", default="ppocrv6-small", choices=sorted(DETECTOR_MODELS))
    parser.add_argument("--size", default="768x1024", help="network input HxW (multiples of 32)")
    parser.add_argument("--calibration", type=int, default=8, help="synthetic calibration pictures")
    parser.add_argument("--compare", type=int, default=4, help="synthetic pictures for the agreement check")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--formats", default="qdq,qoperator")
    args = parser.parse_args()
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise SystemExit("this benchmark needs the 'onnx' package (pip install onnx)") from None
    height, width = (int(v) for v in args.size.lower().split("x"))
    source = DETECTOR_MODELS[args.detector].path()
    cv2.setNumThreads(1)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        # Calibration at a smaller size (the quantiser keeps every activation of every picture).
        calibration = network_inputs(1, args.calibration, (640, 640), args.detector)
        models = {"float32": source}
        for fmt in args.formats.split(","):
            started = time.process_time()
            models[f"int8 {fmt}"] = workdir / f"int8-{fmt}.onnx"
            quantise(source, models[f"int8 {fmt}"], fmt, calibration, workdir)
            print(f"quantised ({fmt}) in {time.process_time() - started:.1f} s CPU", flush=True)
        sessions = {name: session(path) for name, path in models.items()}
        timing_input = network_inputs(2, 1, (height, width), args.detector)[0]
        compare = network_inputs(3, args.compare, (height, width), args.detector)
        maps = {name: [s.run(None, {"x": x})[0][0, 0] > 0.3 for x in compare] for name, s in sessions.items()}
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(args.repeats):  # interleaved, so the machine's load hits every model alike
            for name, s in sessions.items():
                started = time.process_time()
                s.run(None, {"x": timing_input})
                times[name].append(time.process_time() - started)

    base = float(np.median(times["float32"]))
    print(f"\n{args.detector} at {height}x{width}, one thread, {args.repeats} interleaved forwards")
    print("| model | CPU s/forward (median) | min | speed-up | text-pixel IoU vs float32 |")
    print("|---|---|---|---|---|")
    for name, values in times.items():
        ious = [(a & b).sum() / max((a | b).sum(), 1) for a, b in zip(maps[name], maps["float32"])]
        print(f"| {name} | {np.median(values):.3f} | {min(values):.3f} | {base / np.median(values):.2f}x | "
              f"{np.mean(ious):.3f} |")


if __name__ == "__main__":
    main()
