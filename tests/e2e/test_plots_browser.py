"""`dvc plots show` renders every chart with no network, checked in a real headless browser.

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so offline its charts
stay blank. The project's page template (plots_page/, named in .dvc/config) carries them
inline. A real `dvc plots show` builds the page in a temporary git repo holding the
project's dvc.yaml, .dvc/config, plots_page/ and committed reports/; Debian's `chromium`
then opens it with every network request blackholed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from dvc_render.html import PAGE_HTML as DVC_DEFAULT_PAGE

from plots_page.build import SCRIPT_TAG, SOURCES, TEMPLATE
from tests.support import ROOT

BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium")
IN_CI = os.environ.get("CI", "").lower() in ("true", "1")
# No proxy listens on port 9 and no host name resolves: any http(s) request fails at once.
NO_NETWORK = ("--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND")
NETWORK_SCRIPT = re.compile(r"""<script[^>]*\ssrc\s*=\s*["']?(https?:)?//""", re.IGNORECASE)

needs_chromium = pytest.mark.skipif(CHROMIUM is None and not IN_CI,
                                    reason="chromium is not installed (CI installs it)")


def vega_plot_names() -> list[str]:
    """The plots dvc.yaml defines with data and a template (the rest are image folders)."""
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    return [name for entry in plots if isinstance(entry, dict) for name in entry]


def vega_div_ids(page: str) -> list[str]:
    """The ids of the divs DVC's page fills with vegaEmbed."""
    return re.findall(r"vegaEmbed\('#([^']+)'", page)


class MarksPerPlot(HTMLParser):
    """Counts rendered `marks` elements (vega's canvas or svg) inside each plot's div."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
            "source", "track", "wbr"}

    def __init__(self, plot_ids):
        super().__init__()
        self.plot_ids, self.open, self.marks = set(plot_ids), [], Counter()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        plot = attrs.get("id") if attrs.get("id") in self.plot_ids else \
            (self.open[-1][1] if self.open else None)
        if plot and "marks" in (attrs.get("class") or "").split():
            self.marks[plot] += 1
        if tag not in self.VOID:
            self.open.append((tag, plot))

    def handle_endtag(self, tag):
        while self.open and self.open.pop()[0] != tag:
            pass


def marks_per_plot(dom: str, plot_ids) -> Counter:
    parser = MarksPerPlot(plot_ids)
    parser.feed(dom)
    return parser.marks


def run(cmd, cwd, timeout=300) -> subprocess.CompletedProcess:
    env = dict(os.environ, DVC_NO_ANALYTICS="1",
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd[0]} failed:\n{result.stdout}\n{result.stderr}"
    return result


def render_offline(page: Path, profile: Path) -> str:
    """The page's DOM after 10 s of virtual time in headless chromium without network."""
    assert CHROMIUM, "chromium is not installed: CI must install it (see .ci/run)"
    return run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", *NO_NETWORK,
                f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom",
                page.as_uri()], page.parent, timeout=120).stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The project's plot definitions, page template and committed plot data in a git repo."""
    repo = tmp_path_factory.mktemp("plots") / "repo"
    for name in ("dvc.yaml", ".dvc/config", "plots_page", "reports"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, repo / name)
    run(["git", "init", "-q"], repo)
    return repo


@needs_chromium
def test_every_vega_plot_renders_with_no_network(repo, tmp_path):
    run([BIN / "dvc", "plots", "show"], repo)  # as a user runs it: .dvc/config picks the page
    page = repo / "dvc_plots" / "index.html"
    source = page.read_text(encoding="utf-8")
    assert not NETWORK_SCRIPT.search(source), "the page loads a script from the network"
    plot_ids = vega_div_ids(source)
    assert sorted(plot_ids) == sorted(vega_plot_names())  # six: curves and confusion

    marks = marks_per_plot(render_offline(page, tmp_path / "profile"), plot_ids)
    assert {plot: marks[plot] for plot in plot_ids if marks[plot] < 1} == {}, \
        "these plots rendered no marks"


@needs_chromium
def test_dvc_default_page_renders_nothing_offline(repo, tmp_path):
    """The control: the browser really is offline, and the check sees blank charts."""
    default = tmp_path / "dvc_default.html"
    default.write_text(DVC_DEFAULT_PAGE, encoding="utf-8")
    run([BIN / "dvc", "plots", "show", "-o", "default_page", "--html-template", default], repo)
    page = repo / "default_page" / "index.html"
    plot_ids = vega_div_ids(page.read_text(encoding="utf-8"))
    assert len(plot_ids) == len(vega_plot_names())
    assert sum(marks_per_plot(render_offline(page, tmp_path / "profile"), plot_ids).values()) == 0


def test_the_template_inlines_exactly_the_pinned_files():
    """template.html is plots_page/build.py's output, not a hand edit or a stale build."""
    template = TEMPLATE.read_text(encoding="utf-8")
    sources = json.loads(SOURCES.read_text())
    for script in sources["scripts"]:
        start = template.index(SCRIPT_TAG.format(script["from"])) + \
            len(SCRIPT_TAG.format(script["from"]))
        code = template[start:template.index("</script>", start)]
        assert hashlib.sha256(code.encode("utf-8")).hexdigest() == script["sha256"], \
            script["from"]
    assert template.count("<script") == len(sources["scripts"])
    assert not NETWORK_SCRIPT.search(template)
    assert "{plot_divs}" in template and "{scripts}" not in template  # no CDN script tags
    for license in sources["licenses"]:
        assert "Redistribution and use" in (TEMPLATE.parent / license["to"]).read_text()
