"""The browser baseline: a raw Playwright loop, a fresh context per page, no Accord at all.

Runs as its own process, as the executor does. Loads the page N times at a given
concurrency in one Chromium (the same executable the executor uses), extracting the title
of each, then measures the memory one open context with the page loaded costs.
Usage: `python bench/_raw_browser.py URL N CONCURRENCY CHROMIUM`; prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from playwright.async_api import Browser, async_playwright

USER_AGENT = "Accord/0.1 (+https://accord.dev/bot)"
MEMORY_CONTEXTS = 8


async def load_all(browser: Browser, url: str, total: int, concurrency: int) -> int:
    remaining = iter(range(total))
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for _ in remaining:
            context = await browser.new_context(user_agent=USER_AGENT)
            try:
                page = await context.new_page()
                response = await page.goto(url)
                await page.eval_on_selector_all("h1", "els => els.map(e => e.textContent)")
                failures += response is None or response.status != 200
            finally:
                await context.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failures


def chromium_rss_mb() -> float:
    """Resident memory of every Chromium process under this one, in MiB."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                tree.setdefault(int(f.read().rsplit(b")", 1)[1].split()[1]), []).append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    total, todo = 0, [os.getpid()]
    while todo:
        for child in tree.get(todo.pop(), []):
            todo.append(child)
            try:
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    if b"chromium" not in f.read().split(b"\0")[0]:
                        continue
                with open(f"/proc/{child}/statm", "rb") as f:
                    total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, ValueError, IndexError):
                continue
    return total / (1024 * 1024)


async def memory_per_context(browser: Browser, url: str) -> float:
    before = chromium_rss_mb()
    contexts = [await browser.new_context() for _ in range(MEMORY_CONTEXTS)]
    for context in contexts:
        await (await context.new_page()).goto(url)
    after = chromium_rss_mb()
    for context in contexts:
        await context.close()
    return (after - before) / MEMORY_CONTEXTS


async def main(url: str, total: int, concurrency: int, chromium: str) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium)
        await load_all(browser, url, min(concurrency * 2, total), concurrency)  # warm
        started = time.perf_counter()
        failures = await load_all(browser, url, total, concurrency)
        seconds = time.perf_counter() - started
        mb = await memory_per_context(browser, url)
        await browser.close()
    print(
        json.dumps(
            {
                "pages": total,
                "seconds": seconds,
                "pages_per_s": total / seconds,
                "failures": failures,
                "mb_per_context": mb,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
