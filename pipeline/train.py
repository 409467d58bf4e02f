"""train stage: the baseline network, exactly as params.yaml describes it."""

from __future__ import annotations

from pathlib import Path

from pipeline import params
from pipeline.atomic import write_json
from pipeline.cli import log, quiet_tensorflow, run_stage

MODEL_PATH = Path("models/baseline.keras")
LIVE_DIR = Path("reports/train")
PLATFORM_PATH = LIVE_DIR / "platform.json"


def main() -> None:
    stage = params.load("train")
    model_settings = params.ModelParams.from_params(stage)
    train_settings = params.TrainParams.from_params(stage)
    # TensorFlow loads only after the params passed, so a typo fails in a blink.
    quiet_tensorflow()
    from pipeline.model import save_model
    from pipeline.platform_record import platform_record
    from pipeline.splits import load_split
    from pipeline.training import fit

    result = fit(model_settings, train_settings, load_split("train"), load_split("val"),
                 live_dir=LIVE_DIR, label="train")
    save_model(result.model, MODEL_PATH)
    write_json(PLATFORM_PATH, platform_record())  # after fit: it replaces LIVE_DIR whole
    log(f"train: val_accuracy {result.val_accuracy:.4f} after {result.epochs_run} epochs; "
        f"wrote {MODEL_PATH}, {PLATFORM_PATH}")


if __name__ == "__main__":
    run_stage("train", main)
