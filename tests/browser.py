"""Headless Chromium for the report tests: a page as a real browser renders it, offline.

``render(page, out)`` writes a full-width screenshot of ``page`` (a local HTML file) and
returns the text of the DOM Chromium built from it, so a test checks both that the page
draws something (the screenshot is not blank) and what it says (its key text). Chromium
comes from ``apt-get install chromium`` (scripts/test.sh installs it when missing); the
browser gets no network (``--host-resolver-rules`` maps every name nowhere), so a page
that needs a CDN shows it."""
from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1280,1600"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("no Chromium on PATH: `apt-get install chromium` (bash scripts/test.sh does it)")


def render(page: Path, out: Path) -> str:
    """Screenshot ``page`` to ``out`` (PNG); return the rendered DOM's visible text."""
    url = Path(page).resolve().as_uri()
    subprocess.run([chromium(), *FLAGS, f"--screenshot={out}", url], capture_output=True, timeout=120, check=True)
    dom = subprocess.run([chromium(), *FLAGS, "--dump-dom", url], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    body = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", dom)
    return " ".join(html.unescape(re.sub(r"(?s)<[^>]+>", " ", body)).split())


def ink(png: Path) -> float:
    """Share of the screenshot's pixels that are not the background (white)."""
    from matplotlib.image import imread

    img = imread(str(png))[..., :3]
    return float((np.abs(img - 1.0).sum(axis=-1) > 0.1).mean())
