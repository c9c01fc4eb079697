#!/bin/sh
# Makes sure the browser engine has a Chromium: Playwright's own build where it can be
# downloaded, else Debian's `chromium` package when running as root. Fast and silent when one
# is already there (it runs before every `make up` and `make test`). Without either, prints one
# line saying how to get one and exits 0: HTTP jobs still run, browser jobs wait.
set -u

PYTHON="${PYTHON:-.venv/bin/python}"
SYSTEM_CHROMIUM=/usr/bin/chromium
# Seconds Playwright's download may take before the distribution's package is tried instead.
DOWNLOAD_SECONDS="${ACCORD_BROWSER_DOWNLOAD_SECONDS:-300}"

[ -x "$SYSTEM_CHROMIUM" ] && exit 0

# Playwright's build, installed already? Its path depends on its version and on
# PLAYWRIGHT_BROWSERS_PATH, so its driver is asked.
bundled=$("$PYTHON" - <<'PY' 2>/dev/null
from playwright.sync_api import sync_playwright
with sync_playwright() as p:
    print(p.chromium.executable_path)
PY
)
[ -n "$bundled" ] && [ -x "$bundled" ] && exit 0

if timeout "$DOWNLOAD_SECONDS" "$PYTHON" -m playwright install chromium >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-cache show chromium >/dev/null 2>&1; then
        apt-get update -qq >/dev/null 2>&1
    fi
    if apt-get install -y -qq chromium >/dev/null 2>&1 && [ -x "$SYSTEM_CHROMIUM" ]; then
        exit 0
    fi
fi

echo "browser engine: no Chromium; run \`playwright install chromium\` or, as root, \`apt-get install chromium\`, or set ACCORD_EXECUTOR_BROWSER_EXECUTABLE (HTTP jobs still run)" >&2
exit 0
