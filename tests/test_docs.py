"""The docs hold: every relative link resolves, the README's results are the committed
run's numbers as reports/metrics.json has them, and the README stays short."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from pipeline.core.paths import METRICS
from tests.support import ROOT

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 200
TEST_COMMAND = "python -m pytest"  # .ci/run runs exactly this
PENDING = "—"  # a results cell whose number the committed run does not have yet

FENCE = re.compile(r"^ *(```|~~~).*?^ *\1[^\n]*$", re.M | re.S)
COMMENT = re.compile(r"<!--.*?-->", re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)

# The README's significance rows: label -> the cell, from metrics.json's `significance`
# (keys as pipeline/reporting/significance.py's compare writes them)
SIGNIFICANCE_ROWS = {
    "test images only the baseline / only the tuned model gets right":
        lambda s: f"{s['baseline_only_right']:,} / {s['tuned_only_right']:,}",
    "exact McNemar p-value": lambda s: f"{s['mcnemar_p_value']:.2g}",
    "paired bootstrap 95% interval of the accuracy gain":
        lambda s: f"{s['accuracy_gain_low']:+.4f} to {s['accuracy_gain_high']:+.4f}",
}


def prose(text: str) -> str:
    """Markdown without code blocks, code spans and comments: where links and headings are."""
    return CODE_SPAN.sub("", COMMENT.sub("", FENCE.sub("", text)))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[*_`]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    for heading in HEADING.findall(COMMENT.sub("", FENCE.sub("", page.read_text()))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def pipeline_outputs() -> list[Path]:
    """Paths dvc.yaml's stages write: a link to one is good before `dvc repro` made it."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    paths = []
    for stage in stages.values():
        for entry in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            paths.append(ROOT / (next(iter(entry)) if isinstance(entry, dict) else entry))
    return paths


def broken_links(page: Path) -> list[str]:
    outputs = pipeline_outputs()
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if SCHEME.match(target):
            continue  # a web address: not checked offline
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            if not any(file == out or out in file.parents for out in outputs):
                broken.append(f"{target}: no such file")
            continue
        if anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {path or page.name}")
    return broken


def test_link_checker_finds_a_broken_file_and_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## The first `dvc repro`\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#the-first-dvc-repro) [no file](missing.md) "
                    "[no anchor](other.md#nowhere) [web](https://example.org/x.md) "
                    "`[in code](also-missing.md)`\n```\n[in a block](gone.md)\n```\n")
    assert broken_links(page) == ["missing.md: no such file",
                                  "other.md#nowhere: no heading #nowhere in other.md"]


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_readme_is_at_most_200_lines():
    assert len(README.read_text().splitlines()) <= MAX_README_LINES


def section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table of the text: rows of cells, the separator row left out."""
    found, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def results_tables() -> tuple[list[list[str]], list[list[str]]]:
    found = tables(section(README.read_text(), "Results"))
    models = [t for t in found if t[0][0] == "model"]
    tests = [t for t in found if t[0][0].startswith("tuned against baseline")]
    assert len(models) == 1 and len(tests) == 1, "README's Results: one table of each kind"
    return models[0], tests[0]


def metric_key(header: str) -> str:
    """'top-2 accuracy' -> 'top_2_accuracy', the key metrics.json uses."""
    return re.sub(r"[\s-]+", "_", header.strip().lower())


def test_readme_model_results_are_the_committed_metrics():
    metrics = json.loads((ROOT / METRICS).read_text())
    table, _ = results_tables()
    keys = [metric_key(h) for h in table[0][1:]]
    assert {"test_accuracy", "macro_f1"} <= set(keys)
    rows = {row[0]: row[1:] for row in table[1:]}
    assert set(rows) == {"baseline", "tuned", "gain"}
    shown, expected = {}, {}
    for model, cells in rows.items():
        for key, cell in zip(keys, cells, strict=True):
            shown[f"{model}.{key}"] = cell.strip("*")
            value = metrics[model][key]
            expected[f"{model}.{key}"] = f"{value:+.4f}" if model == "gain" else f"{value:.4f}"
    assert shown == expected


def test_readme_significance_rows_are_the_committed_metrics_or_pending():
    test = json.loads((ROOT / METRICS).read_text()).get("significance")
    _, table = results_tables()
    rows = {row[0]: row[1] for row in table[1:]}
    assert set(rows) == set(SIGNIFICANCE_ROWS)
    if test is None:  # a run before the significance test: the README must not claim one
        assert rows == {label: PENDING for label in SIGNIFICANCE_ROWS}
        return
    assert f"{test['confidence']:.0%} interval" in next(
        label for label in rows if "interval" in label)
    assert rows == {label: cell(test) for label, cell in SIGNIFICANCE_ROWS.items()}


def test_readme_test_command_is_the_one_ci_runs():
    quick_start = section(README.read_text(), "Quick start")
    commands = [line.split("#")[0].strip() for line in quick_start.splitlines()]
    assert TEST_COMMAND in commands
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text().splitlines()
