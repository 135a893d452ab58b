"""Shared by tests/test_web_*.py: headless Chromium from the Debian package driven by Selenium
with Debian's chromium-driver (no browser download), wrapped so the async tests can drive it
while the API server runs in their own event loop (every browser call runs in a thread)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

BOUND = 60.0
SHOTS = Path(os.environ.get("AGENTRUN_TEST_SCREENSHOTS", "/tmp/agentrun-web-shots"))


def _binary(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def chrome() -> Iterator[Any]:
    """One headless Chromium for the session. Missing here is a failure, never a skip: .ci/run
    installs the Debian packages."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser = _binary("chromium", "chromium-browser", "google-chrome")
    driver_path = _binary("chromedriver", "chromium-driver")
    assert browser and driver_path, (
        "headless browser tests need Debian's chromium and chromium-driver: "
        "apt-get install -y chromium chromium-driver"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,900",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_script_timeout(BOUND)
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """The page in the session's browser; every call goes through a thread."""

    def __init__(self, driver: Any, base_url: str, name: str) -> None:
        self.driver = driver
        self.base_url = base_url
        self.name = name
        self.shots = 0

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def open(self, path: str = "/", *, key: str | None = None) -> None:
        # The tab's storage is set on the page's origin, then the page is loaded afresh (via
        # about:blank: a change of the hash alone would not reload it).
        await self._run(self.driver.get, self.base_url + "/healthz")
        await self._run(self.driver.execute_script, "window.sessionStorage.clear()")
        if key is not None:
            await self.js("sessionStorage.setItem('agentrun.key', arguments[0])", key)
        await self._run(self.driver.get, "about:blank")
        await self._run(self.driver.get, self.base_url + path)

    async def js(self, script: str, *args: Any) -> Any:
        return await self._run(self.driver.execute_script, script, *args)

    async def wait(self, script: str, *args: Any, timeout: float = BOUND, what: str = "") -> Any:
        """Poll a JavaScript expression (`return ...`) until it gives a truthy value; that
        value. Never a sleep: a bounded condition."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = await self.js(script, *args)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                await self.shot("timeout")
                raise AssertionError(f"timed out waiting for {what or script}")
            await asyncio.sleep(0.05)

    async def click(self, css: str) -> None:
        await self.wait(
            "const n = document.querySelector(arguments[0]); "
            "return n && !n.disabled && n.offsetParent !== null",
            css,
            what=f"{css} clickable",
        )
        await self.js("document.querySelector(arguments[0]).click()", css)

    async def type(self, css: str, text: str) -> None:
        from selenium.webdriver.common.by import By

        # The page renders its views from script once loaded: wait for the field (bounded).
        await self.wait(
            "const n = document.querySelector(arguments[0]); "
            "return n && !n.disabled && n.offsetParent !== null",
            css,
            what=f"{css} shown",
        )
        element = await self._run(self.driver.find_element, By.CSS_SELECTOR, css)
        await self._run(element.clear)
        await self._run(element.send_keys, text)

    async def text(self, css: str) -> str:
        return str(
            await self.js(
                "const n = document.querySelector(arguments[0]); return n ? n.textContent : ''",
                css,
            )
        )

    async def resize(self, width: int, height: int) -> None:
        await self._run(self.driver.set_window_size, width, height)

    async def shot(self, label: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.shots += 1
        path = SHOTS / f"{self.name}-{self.shots:02d}-{label}.png"
        await self._run(self.driver.save_screenshot, str(path))
        return path


class TcpProxy:
    """A TCP proxy between the browser and the server, so a test can cut the network: `cut`
    drops every open connection (an EventSource sees its stream fail), `refuse` turns new ones
    away until `accept` (the page stays in its reconnecting state meanwhile)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.refusing = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        self._writers.difference_update((writer, up_writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        finally:
            writer.transport.abort()
