"""fetch stage: the four raw IDX files into data/raw/, plus source.json saying where from."""

from __future__ import annotations

from pathlib import Path

from pipeline import idx, params
from pipeline.atomic import atomic_dir, write_json
from pipeline.cli import log, run_stage
from pipeline.idx import RAW_DIR
from pipeline.sources import fetch, md5


def fetch_raw(settings: params.FetchParams, out_dir: Path = RAW_DIR) -> dict:
    """Fetch, verify and write atomically: a failure leaves out_dir as it was."""
    fetched, skipped = fetch(settings.source, settings.local_dir)
    idx.validate_files(fetched.files)
    record = {
        "source": fetched.source,
        "requested": settings.source,
        "official_split": fetched.official_split,
        "note": fetched.note,
        **fetched.details,
        "skipped": skipped,
        "files": {name: {"md5": md5(data), "bytes": len(data)}
                  for name, data in sorted(fetched.files.items())},
    }
    with atomic_dir(out_dir) as tmp:
        for name, data in fetched.files.items():
            (tmp / name).write_bytes(data)
        write_json(tmp / "source.json", record)
    return record


def main() -> None:
    settings = params.FetchParams.from_params(params.load("fetch"))
    record = fetch_raw(settings)
    for skipped in record["skipped"]:
        log(f"fetch: skipped {skipped['source']}: {skipped['reason']}")
    log(f"fetch: wrote {RAW_DIR}/ from the {record['source']} source: {record['note']}")


if __name__ == "__main__":
    run_stage("fetch", main)
