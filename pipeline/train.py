"""train stage: the baseline network, exactly as params.yaml describes it."""

from __future__ import annotations

from pathlib import Path

from pipeline.core import params
from pipeline.core.atomic import write_json
from pipeline.core.paths import LIVE_DIRS, MODELS, PREPARED_DIR, TRAIN_PLATFORM
from pipeline.core.runner import log, quiet_tensorflow, run_stage
from pipeline.training import engine

MODEL_PATH, LIVE_DIR = MODELS["baseline"], LIVE_DIRS["baseline"]


def train(model_settings: params.ModelParams, train_settings: params.TrainParams,
          root: Path = Path(".")):
    """Fit on root's prepared data; write the model, the curves and the platform record."""
    engine.use(engine.TRAINING)  # Keras loads only after the params passed
    quiet_tensorflow()
    from pipeline.data.prepared import load_split
    from pipeline.training.fitting import fit
    from pipeline.training.model import save_model
    from pipeline.training.platform import platform_record

    prepared = root / PREPARED_DIR
    result = fit(model_settings, train_settings, load_split("train", prepared),
                 load_split("val", prepared), live_dir=root / LIVE_DIR, label="train")
    save_model(result.model, root / MODEL_PATH)
    write_json(root / TRAIN_PLATFORM, platform_record())  # after fit: it replaces LIVE_DIR
    return result


def main() -> None:
    stage = params.load("train")
    result = train(params.ModelParams.from_params(stage), params.TrainParams.from_params(stage))
    log(f"train: val_accuracy {result.val_accuracy:.4f} after {result.epochs_run} epochs; "
        f"wrote {MODEL_PATH}, {TRAIN_PLATFORM}")


if __name__ == "__main__":
    run_stage("train", main)
