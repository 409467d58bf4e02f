"""predict on the test split written out as image files, against evaluate's predictions.

Writes every test image twice into a temp folder: as the 28x28 PNG it is, and as a
product photo (dark garment on white, 200x200 RGB PNG). Runs `python -m pipeline.predict
--json` on each folder, as a user would, and compares with reports/eval/<model>/
predictions.csv: how many classes agree with evaluate, the accuracy, and predict's
wall time.

    python bench/predict_files.py [--model tuned] [--limit N]   # after `dvc repro`
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core.paths import PREDICTIONS_FILE, RAW_DIR, eval_file  # noqa: E402
from pipeline.data import idx  # noqa: E402

PHOTO_SIZE = (200, 200)
VERSIONS = {
    "28x28 PNG": lambda image: image,
    "photo 200x200 RGB": lambda image: ImageOps.invert(image).resize(PHOTO_SIZE).convert("RGB"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tuned", choices=("baseline", "tuned"))
    parser.add_argument("--limit", type=int, default=None, help="first N test images only")
    args = parser.parse_args()
    images, _ = idx.read_split(RAW_DIR, "test")
    evaluated = pd.read_csv(ROOT / eval_file(args.model, PREDICTIONS_FILE))
    images, evaluated = images[: args.limit], evaluated[: args.limit]
    print(f"model {args.model}, {len(images)} test images")
    with tempfile.TemporaryDirectory() as tmp:
        for version, transform in VERSIONS.items():
            folder = Path(tmp) / version.replace(" ", "_")
            folder.mkdir()
            for i, image in enumerate(images):
                transform(Image.fromarray(image)).save(folder / f"{i:05d}.png")
            started = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "pipeline.predict", "--json",
                                     "--top-k", "1", "--model", args.model, str(folder)],
                                    cwd=ROOT, capture_output=True, text=True, check=True)
            seconds = time.perf_counter() - started
            predicted = np.array([p["top_k"][0]["class"]
                                  for p in json.loads(result.stdout)["predictions"]])
            same = int((predicted == evaluated["predicted"].to_numpy()).sum())
            accuracy = float((predicted == evaluated["actual"].to_numpy()).mean())
            print(f"{version:>18}: same class as evaluate {same}/{len(images)}, "
                  f"accuracy {accuracy:.4f}, predict {seconds:.1f} s")


if __name__ == "__main__":
    main()
