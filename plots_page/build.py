"""Rebuild template.html (the page `dvc plots show` fills) from the pinned npm packages.

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so its charts stay
blank offline. This page carries them inline instead. Its output is committed, so a fresh
clone needs no step; run this by hand (`python -m plots_page.build`, needs the npm client)
only after changing a pin in sources.json. Every tarball and file is checksum-verified.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from pipeline.core.atomic import write_bytes, write_text

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "sources.json"
TEMPLATE = HERE / "template.html"
SCRIPT_TAG = '<script data-package="{}">'
# What dvc_render replaces in a template. The page uses the last two only: the first stands
# for DVC's CDN script tags.
PLACEHOLDERS = ("{scripts}", "{refresh_tag}", "{plot_divs}")

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <!-- vega, vega-lite and vega-embed inline, so the page needs no network: built by
         plots_page/build.py from plots_page/sources.json; licenses in plots_page/. -->
@SCRIPTS@
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def fail(message: str) -> None:
    sys.exit(f"plots_page.build: error: {message}")


def fetch(spec: str, integrity: str, folder: str) -> tarfile.TarFile:
    """`npm pack` one package version, verified against its pinned sha512 integrity."""
    packed = subprocess.run(["npm", "pack", "--silent", "--json", "--pack-destination", folder,
                             spec], capture_output=True, text=True)
    if packed.returncode != 0:
        fail(f"npm pack {spec} failed: {packed.stderr.strip().splitlines()[-1:]}")
    data = (Path(folder) / json.loads(packed.stdout)[0]["filename"]).read_bytes()
    algorithm, _, expected = integrity.partition("-")
    if base64.b64encode(hashlib.new(algorithm, data).digest()).decode() != expected:
        fail(f"{spec}: the tarball does not match its pinned {algorithm} checksum")
    return tarfile.open(fileobj=io.BytesIO(data))


def read(tarball: tarfile.TarFile, path: str) -> bytes:
    member = tarball.extractfile(path)
    if member is None:
        fail(f"{path} is missing from its tarball")
    return member.read()


def main() -> None:
    sources = json.loads(SOURCES.read_text())
    with tempfile.TemporaryDirectory() as folder:
        tarballs = {spec: fetch(spec, integrity, folder)
                    for spec, integrity in sources["tarballs"].items()}
        blocks = []
        for script in sources["scripts"]:
            code = read(tarballs[script["from"]], script["path"])
            if hashlib.sha256(code).hexdigest() != script["sha256"]:
                fail(f"{script['from']} {script['path']} does not match its pinned sha256")
            text = code.decode("utf-8")
            if "</script" in text.lower() or any(p in text for p in PLACEHOLDERS):
                fail(f"{script['path']} cannot be inlined: it holds </script> or a placeholder")
            blocks.append(f"{SCRIPT_TAG.format(script['from'])}{text}</script>")
        for license in sources["licenses"]:
            write_bytes(HERE / license["to"], read(tarballs[license["from"]], license["path"]))
    write_text(TEMPLATE, PAGE.replace("@SCRIPTS@", "\n".join(blocks)))
    print(f"wrote {TEMPLATE} ({TEMPLATE.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
