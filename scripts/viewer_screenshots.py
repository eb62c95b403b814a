"""Screenshots of a study viewer page at two window sizes, for the docs (headless Chromium via Selenium).

    .venv/bin/python scripts/viewer_screenshots.py runs/demo/viewer/study_<id>.html [--out docs] [--row ROW_ID]

Writes ``viewer_wide.png`` (1400 × 900, three views side by side) and ``viewer_narrow.png`` (760 × 1000, views
stacked). Needs Debian's ``chromium`` and ``chromium-driver``. With
``--row`` the page first jumps to that row's point (and selects it), as a person clicking the row would.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--force-device-scale-factor=1", "--hide-scrollbars")
SIZES = {"wide": (1400, 900), "narrow": (760, 1000)}


def shoot(page: Path, out_dir: Path, row: str | None = None) -> list[Path]:
    """One PNG per window size in :data:`SIZES`; returns their paths."""
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for f in (*FLAGS, f"--user-data-dir={tempfile.mkdtemp(prefix='radspine-shots-')}"):
        opts.add_argument(f)
    drv = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    written = []
    try:
        for name, (w, h) in SIZES.items():
            drv.set_window_size(w, h)
            drv.get(page.resolve().as_uri())
            for _ in range(200):
                if drv.execute_script("return document.body.getAttribute('data-ready') === '1'"):
                    break
                time.sleep(0.05)
            if row:
                drv.execute_script("window.radspineViewer.jumpTo(arguments[0])", row)
            if name == "narrow":
                drv.execute_script("document.getElementById('nviews').value = '1';"
                                   "document.getElementById('nviews').dispatchEvent(new Event('change'))")
            time.sleep(0.3)
            img = Image.open(io.BytesIO(drv.get_screenshot_as_png())).convert("RGB")
            path = out_dir / f"viewer_{name}.png"
            img.save(path, optimize=True)
            written.append(path)
    finally:
        drv.quit()
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--row", default=None, help="row_id whose point the page jumps to first")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for p in shoot(args.page, args.out, args.row):
        print(f"{p} {p.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
