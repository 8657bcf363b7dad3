"""Build the documentation site and screenshot pages of it with headless Chromium.

    python scripts/docs_screenshots.py                  # refresh docs/assets/screenshots/{home,fusions}.png
    python scripts/docs_screenshots.py --out /tmp/shots --pages index.html quickstart.html

The site is built with ``mkdocs build --strict`` into a temporary folder (not ``site/``).
``tests/docs/test_screenshots.py`` uses the same functions and checks that the pages render.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: page of the built site -> screenshot name in docs/assets/screenshots/
PAGES = {"index.html": "home.png", "fusions.html": "fusions.png"}
WINDOW = (1280, 2000)


def build_site(out: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of this checkout into ``out`` (stdout and stderr captured)."""
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
                           "-d", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def install_chromium() -> str:
    """Try ``apt-get install chromium`` (as root); returns why it failed, or "" on success."""
    if shutil.which("apt-get") is None:
        return "apt-get is not available"
    prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if prefix is None:
        return "not root and no sudo to run apt-get"
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(prefix + command, capture_output=True, text=True, timeout=900,
                              env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if done.returncode != 0:
            return f"`{' '.join(command)}` failed: {done.stderr.strip()[-300:]}"
    return ""


def screenshot(browser: str, page: Path, png: Path, window: tuple[int, int] = WINDOW) -> None:
    """Render ``page`` (a local HTML file) with headless Chromium into ``png``."""
    png.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={window[0]},{window[1]}", f"--screenshot={png}", page.as_uri()],
                   check=True, capture_output=True, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "assets" / "screenshots")
    parser.add_argument("--pages", nargs="+", default=list(PAGES), help="pages of the built site")
    args = parser.parse_args()
    browser = find_chromium()
    if browser is None:
        raise SystemExit("headless Chromium not found (apt-get install chromium)")
    for name in PAGES.values():  # first run: the home page links the screenshots, so they must exist
        if not (args.out / name).is_file():
            args.out.mkdir(parents=True, exist_ok=True)
            from PIL import Image

            Image.new("L", WINDOW, 255).save(args.out / name)
    with tempfile.TemporaryDirectory() as tmp:
        built = build_site(Path(tmp) / "site")
        if built.returncode != 0:
            raise SystemExit(f"mkdocs build --strict failed:\n{built.stderr[-3000:]}")
        for page in args.pages:
            png = args.out / PAGES.get(page, Path(page).with_suffix(".png").name.replace("/", "_"))
            screenshot(browser, Path(tmp) / "site" / page, png)
            print(f"{page} -> {png}")


if __name__ == "__main__":
    main()
