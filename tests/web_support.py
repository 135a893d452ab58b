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
        await self._run(self.driver.get, self.base_url + path)
        await self._run(self.driver.execute_script, "window.sessionStorage.clear()")
        if key is not None:
            await self.js("sessionStorage.setItem('agentrun.key', arguments[0])", key)
        await self._run(self.driver.get, self.base_url + path)
        await self._run(self.driver.refresh)

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
