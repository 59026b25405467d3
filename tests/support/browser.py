"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright (no
browser is ever downloaded). Shared by tests/e2e/test_dashboard.py and ``python -m bench
--dashboard`` so that the figure is measured with the browser the tests check."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, Page, sync_playwright

from support.common import LOCALHOST

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
"""No sandbox (we run as root in CI), nothing that talks to the internet on its own."""


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed on leaving (also on failure)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def sign_in(page: Page, port: int, token: str, query: str = "") -> None:
    """Open the dashboard on ``port`` (``query``: e.g. ``?poll=1``) and sign in with
    ``token`` as a user would: type it in the form and submit."""
    page.goto(f"http://{LOCALHOST}:{port}/{query}")
    page.fill("#login-token", token)
    page.click("#login button[type=submit]")
