"""The local website the browser tests load, and a canary on 127.0.0.2 that logs every hit.

The tenants' policy allows 127.0.0.1 only, so anything that reaches the canary got past the
policy: its log staying empty is the proof that a refused request never left.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

FORM = """<!doctype html><title>Search</title>
<form action="/results" method="post">
  <input id="q" name="q"> <select id="size" name="size">
  <option value="s">Small</option><option value="l">Large</option></select>
  <button id="go" type="submit">Go</button>
</form>"""

# The list is rendered by JavaScript after a delay: only a real browser ever sees it.
RESULTS = """<!doctype html><title>Results</title><p id="echo">{echo}</p><ul id="items"></ul>
<script>setTimeout(() => {{
  const ul = document.getElementById("items");
  for (const [name, price] of {items}) {{
    const li = document.createElement("li"); li.dataset.price = price; li.textContent = name;
    ul.appendChild(li);
  }}
  document.body.insertAdjacentHTML("beforeend", "<p id=done>rendered</p>");
}}, 150);</script>"""

STEPS = """<!doctype html><title>Steps</title>
<select id="colour"><option value="r">Red</option><option value="g">Green</option></select>
<input id="box"><p id="keys"></p><div id="banner" class="ad">Ad</div>
<div style="height:3000px"></div><p id="bottom">Bottom <b>bold</b></p>
<script>
document.getElementById("box").addEventListener("keydown", e => {
  document.getElementById("keys").textContent += e.key + ";";
});
setTimeout(() => document.getElementById("banner").remove(), 100);
setTimeout(() => document.body.insertAdjacentHTML("beforeend", "<p>late text</p>"), 200);
fetch("/api").then(r => r.text()).then(t => document.body.dataset.api = t);
</script>"""

STORAGE = """<!doctype html><title>Storage</title><p id="seen"></p><script>
document.getElementById("seen").textContent = JSON.stringify({
  cookie: document.cookie, local: localStorage.getItem("who"),
  session: sessionStorage.getItem("who")});
const who = new URLSearchParams(location.search).get("who");
if (who) { localStorage.setItem("who", who); sessionStorage.setItem("who", who); }
</script>"""


@dataclass
class Sites:
    """The site (127.0.0.1) and canary (127.0.0.2), and what the tests wait on."""

    url: str = ""
    canary_url: str = ""
    canary_hits: list[str] = field(default_factory=list)
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    user_agents: list[str] = field(default_factory=list)


def _site(sites: Sites) -> web.Application:
    routes = web.RouteTableDef()

    def html(text: str) -> web.Response:
        return web.Response(text=text, content_type="text/html")

    @routes.get("/form")
    async def form(request: web.Request) -> web.Response:
        sites.user_agents.append(request.headers.get("User-Agent", ""))
        return html(FORM)

    @routes.post("/results")
    async def results(request: web.Request) -> web.Response:
        data = await request.post()
        q, size = str(data.get("q", "")), str(data.get("size", ""))
        items = [[f"{q} {i} ({size})", i * 10] for i in range(1, 4)]
        return html(RESULTS.format(echo=f"{q}/{size}", items=json.dumps(items)))

    @routes.get("/steps")
    async def steps(request: web.Request) -> web.Response:
        return html(STEPS)

    @routes.get("/api")
    async def api(request: web.Request) -> web.Response:
        await asyncio.sleep(0.1)
        return web.Response(text="api-ok")

    @routes.get("/storage")
    async def storage(request: web.Request) -> web.Response:
        response = html(STORAGE)
        who = request.query.get("who")
        if who:
            response.set_cookie("who", who)
        return response

    @routes.get("/leaky")
    async def leaky(request: web.Request) -> web.Response:
        c = sites.canary_url
        return html(
            f'<title>Leaky</title><img src="{c}/pixel.png"><p id="status">waiting</p><script>'
            f'fetch("{c}/api").then(() => "reached", () => "blocked")'
            '.then(t => document.getElementById("status").textContent = t);'
            f'fetch("{c.replace("http", "https")}/secure?q=1").catch(() => null);'
            f'const ws = new WebSocket("{c.replace("http", "ws")}/socket");'
            'ws.onerror = () => document.body.dataset.ws = "blocked";'
            'ws.onopen = () => document.body.dataset.ws = "open";</script>'
        )

    @routes.get("/to-canary")
    async def to_canary(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{sites.canary_url}/landing")

    @routes.get("/slow")
    async def slow(request: web.Request) -> web.Response:
        sites.slow_started.set()
        await sites.release.wait()
        return html("<p>finally</p>")

    app = web.Application()
    app.router.add_routes(routes)
    return app


def _canary(sites: Sites) -> web.Application:
    async def any_path(request: web.Request) -> web.Response:
        sites.canary_hits.append(request.path)
        return web.Response(text="canary")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", any_path)
    return app


@pytest.fixture(name="sites")
async def sites_fixture() -> AsyncIterator[Sites]:
    made = Sites()
    runners = []
    for host, app in (("127.0.0.1", _site(made)), ("127.0.0.2", _canary(made))):
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, host, 0).start()
        runners.append(runner)
        url = f"http://{host}:{runner.addresses[0][1]}"
        if host == "127.0.0.1":
            made.url = url
        else:
            made.canary_url = url
    yield made
    made.release.set()
    for runner in runners:
        await runner.cleanup()
