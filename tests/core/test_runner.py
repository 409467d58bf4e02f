import re

import pytest

from pipeline.core import runner
from pipeline.core.errors import PipelineError


def test_a_finished_stage_reports_its_time_and_peak_memory(capsys):
    def main():
        bytearray(64 * 1024 * 1024)  # touch 64 MiB, so the peak is at least that

    runner.run_stage("demo", main)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.fullmatch(r"demo: done in (\d+s), peak memory (\d+) MiB", line)
    assert match, line
    assert int(match.group(2)) >= 64


def test_a_failed_stage_is_one_line_and_exit_status_1(capsys):
    def main():
        raise PipelineError("train.epochs: must be >= 1, got 0")

    with pytest.raises(SystemExit) as exit_:
        runner.run_stage("train", main)
    assert exit_.value.code == 1
    assert capsys.readouterr().err == "train: error: train.epochs: must be >= 1, got 0\n"
