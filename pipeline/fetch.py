"""fetch stage: the four raw IDX files into data/raw/, plus source.json saying where from."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from pipeline.core import params
from pipeline.core.atomic import atomic_dir, write_json
from pipeline.core.errors import PipelineError
from pipeline.core.paths import RAW_DIR, SOURCE_RECORD
from pipeline.core.runner import log, run_stage
from pipeline.data import idx
from pipeline.data.sources import Loader, content_sha256, from_source, md5

# DVC deletes a stage's outputs before running it, so a failed fetch leaves no data/raw/.
RECOVERY_HINT = f"to get the last good data back: dvc checkout {RAW_DIR.as_posix()}"


def fetch_raw(settings: params.FetchParams, out_dir: Path = RAW_DIR,
              loaders: Mapping[str, Loader] | None = None) -> dict:
    """Fetch, verify and write atomically: a failure leaves out_dir as it was."""
    fetched, skipped = from_source(settings.source, settings.local_dir, loaders)
    idx.validate_files(fetched.files)
    record = {
        "source": fetched.source,
        "requested": settings.source,
        "official_split": fetched.official_split,
        "note": fetched.note,
        **fetched.details,
        "skipped": skipped,
        "files": {name: {"md5": md5(data), "bytes": len(data),
                         "content_sha256": content_sha256(data, name)}
                  for name, data in sorted(fetched.files.items())},
    }
    with atomic_dir(out_dir) as tmp:
        for name, data in fetched.files.items():
            (tmp / name).write_bytes(data)
        write_json(tmp / SOURCE_RECORD, record)
    return record


def main() -> None:
    try:
        settings = params.FetchParams.from_params(params.load("fetch"))
        record = fetch_raw(settings)
    except PipelineError as exc:
        raise type(exc)(f"{exc}; {RECOVERY_HINT}") from None
    for skipped in record["skipped"]:
        log(f"fetch: skipped {skipped['source']}: {skipped['reason']}")
    log(f"fetch: wrote {RAW_DIR}/ from the {record['source']} source: {record['note']}")


if __name__ == "__main__":
    run_stage("fetch", main)
