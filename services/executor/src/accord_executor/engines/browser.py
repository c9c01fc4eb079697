"""Finding a usable Chromium: the configured one, Playwright's own, or the system's.

Detection only: nothing here launches a browser. The executor asks WorkerService only for
engines it can run, so browser jobs stay queued for executors that have one.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

import structlog
from playwright.async_api import async_playwright

log = structlog.get_logger("accord.executor.browser")

SYSTEM_CHROMIUM = "/usr/bin/chromium"
PROBE_SECONDS = 10.0


@dataclass(frozen=True)
class BrowserProbe:
    """Where a usable Chromium is, or why there is none."""

    executable: str | None
    reason: str = ""

    @property
    def found(self) -> bool:
        return self.executable is not None


def usable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


async def find_browser(configured: str | None) -> BrowserProbe:
    """A configured path is the operator's choice: when it is broken there is no fallback."""
    if configured:
        if usable(configured):
            return BrowserProbe(configured)
        return BrowserProbe(None, f"browser_executable {configured!r} is not an executable file")
    tried: list[str] = []
    bundled = await _playwright_chromium()
    if bundled is not None:
        if usable(bundled):
            return BrowserProbe(bundled)
        tried.append(bundled)
    if usable(SYSTEM_CHROMIUM):
        return BrowserProbe(SYSTEM_CHROMIUM)
    tried.append(SYSTEM_CHROMIUM)
    return BrowserProbe(
        None,
        f"no Chromium found (tried {', '.join(tried)}); run `playwright install chromium` "
        "or set ACCORD_EXECUTOR_BROWSER_EXECUTABLE",
    )


async def _playwright_chromium() -> str | None:
    """The path of Playwright's own Chromium build, installed or not.

    Asking Playwright's driver (a Node process, not a browser) is the supported way: the
    install location depends on its version and on PLAYWRIGHT_BROWSERS_PATH.
    """
    try:
        async with asyncio.timeout(PROBE_SECONDS), async_playwright() as playwright:
            return playwright.chromium.executable_path
    except Exception as exc:  # a broken driver means "no bundled browser", not a crash
        log.warning("browser.playwright_probe_failed", error=repr(exc))
        return None
