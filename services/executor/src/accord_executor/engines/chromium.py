"""One long-lived Chromium per executor, a fresh context per job, recycled when it should be.

Every context is opened with its job's own proxy listener and nothing else to reach the
network with: the browser is launched pointed at the refusing listener with no bypass
(loopback included), QUIC off, WebRTC kept off non-proxied UDP, and service workers are
blocked per context. The browser is replaced after `recycle_after` jobs, when it crashed or
was killed (the next job launches a fresh one), and when its processes use more memory than
`max_memory_mb`; a browser being replaced closes once its last job ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog
from playwright.async_api import Browser, BrowserContext, Page, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError
from prometheus_client import Counter

log = structlog.get_logger("accord.executor.chromium")

LAUNCHES = Counter(
    "accord_executor_browser_launches_total", "Chromium launches, by why", ["reason"]
)
# Jobs between two looks at the browser's memory (each reads /proc).
MEMORY_CHECK_EVERY = 20
# Chromium flags that keep every byte on the proxy path.
LOCKDOWN_ARGS = (
    "--proxy-bypass-list=<-loopback>",
    "--disable-quic",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-domain-reliability",
    "--no-pings",
)


@dataclass
class _Generation:
    """One launched browser and the jobs using it."""

    browser: Browser
    jobs: int = 0
    users: int = 0
    retired: bool = False


class BrowserHost:
    def __init__(
        self,
        executable: str,
        *,
        proxy_port: int,
        user_agent: str,
        recycle_after: int = 200,
        max_memory_mb: int = 2048,
        memory_check_every: int = MEMORY_CHECK_EVERY,
    ) -> None:
        self._memory_check_every = memory_check_every
        self._executable = executable
        self._proxy_port = proxy_port
        self._user_agent = user_agent
        self._recycle_after = recycle_after
        self._max_memory_mb = max_memory_mb
        self._playwright: Playwright | None = None
        self._current: _Generation | None = None
        self._launching = asyncio.Lock()

    async def start(self) -> None:
        self._playwright = await async_playwright().start()
        await self._browser()  # the first job should not pay for the launch

    async def close(self) -> None:
        if self._current is not None:
            with contextlib.suppress(Exception):
                await self._current.browser.close()
            self._current = None
        if self._playwright is not None:
            with contextlib.suppress(Exception):
                await self._playwright.stop()
            self._playwright = None

    @property
    def browser(self) -> Browser | None:
        return self._current.browser if self._current is not None else None

    async def _browser(self) -> _Generation:
        async with self._launching:
            current = self._current
            if current is not None and current.browser.is_connected() and not current.retired:
                return current
            reason = "start" if current is None else "crashed" if not current.retired else "recycle"
            if current is not None:
                current.retired = True
                await _close_if_unused(current)
            assert self._playwright is not None, "BrowserHost.start() was not called"
            browser = await self._playwright.chromium.launch(
                executable_path=self._executable,
                args=[f"--proxy-server=http://127.0.0.1:{self._proxy_port}", *LOCKDOWN_ARGS],
                handle_sigint=False,
                handle_sigterm=False,
                handle_sighup=False,
            )
            LAUNCHES.labels(reason).inc()
            log.info("browser.launched", reason=reason, version=browser.version)
            self._current = _Generation(browser)
            return self._current

    @contextlib.asynccontextmanager
    async def page(self, proxy_port: int) -> AsyncIterator[tuple[BrowserContext, Page]]:
        """A fresh context (no cookies, storage or cache of any other job) and its page,
        whose every request leaves through the proxy listener on `proxy_port`."""
        generation, context = await self._context(proxy_port)
        try:
            yield context, await context.new_page()
        finally:
            generation.users -= 1
            with contextlib.suppress(Exception):
                await asyncio.shield(context.close())
            if generation.jobs >= self._recycle_after or (
                generation.jobs % self._memory_check_every == 0 and self._too_big(generation)
            ):
                generation.retired = True
            if generation.retired:
                await _close_if_unused(generation)

    async def _context(self, proxy_port: int) -> tuple[_Generation, BrowserContext]:
        """A new context, counted in; a browser that cannot open one (killed, and Playwright
        not told yet) is replaced once."""
        for tries_left in (1, 0):
            generation = await self._browser()
            generation.users += 1
            generation.jobs += 1
            try:
                context = await generation.browser.new_context(
                    proxy={"server": f"http://127.0.0.1:{proxy_port}", "bypass": "<-loopback>"},
                    service_workers="block",
                    user_agent=self._user_agent,
                    accept_downloads=False,
                )
            except BaseException as exc:  # cancelled too: the count must come back down
                generation.users -= 1
                if not isinstance(exc, PlaywrightError):
                    raise
                generation.retired = True
                if not tries_left:
                    raise
            else:
                return generation, context
        raise AssertionError("unreachable")

    def _too_big(self, generation: _Generation) -> bool:
        used = _browser_memory_mb(generation.browser)
        return used is not None and used > self._max_memory_mb


async def _close_if_unused(generation: _Generation) -> None:
    if generation.users == 0:
        with contextlib.suppress(Exception):
            await generation.browser.close()


def _browser_memory_mb(browser: Browser) -> float | None:
    """Resident memory of Chromium's process trees under this process, from /proc; None
    where /proc cannot tell. (Playwright does not expose the browser's pid.)"""
    tree = _children()
    if not tree:
        return None
    found, todo = [], [os.getpid()]
    while todo:
        for child in tree.get(todo.pop(), []):
            todo.append(child)
            if b"chromium" in _read(f"/proc/{child}/cmdline").split(b"\0")[0]:
                found.append(child)
    pages = sum(int((_read(f"/proc/{pid}/statm").split() or [b"0", b"0"])[1]) for pid in found)
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            stat = _read(f"/proc/{entry}/stat") if entry.isdigit() else b""
            if b")" in stat:
                ppid = int(stat.rsplit(b")", 1)[1].split()[1])
                tree.setdefault(ppid, []).append(int(entry))
    return tree


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:  # the process ended meanwhile
        return b""
