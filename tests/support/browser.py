"""A real headless Chromium (Debian's `chromium` and `chromium-driver` packages) driven by Selenium, and the
dashboard served by `kubectl-flowrun ui` as a real process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = Path(os.environ.get("FLOWRUN_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("FLOWRUN_CHROMEDRIVER", "/usr/bin/chromedriver"))


def chromium(width: int = 1400, height: int = 1000) -> webdriver.Chrome:
    """Headless Chromium; fails (never skips) with what to install when the browser is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        raise AssertionError(
            f"{', '.join(missing)} missing: install Debian's browser with "
            "`apt-get install -y chromium chromium-driver` (.ci/run does it)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # runs as root in CI
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    return driver


class DashboardProcess:
    """``kubectl-flowrun ui --port 0`` (the CLI command users run), with its URL read from its output."""

    def __init__(self, kubeconfig: Path, *extra: str) -> None:
        script = Path(sys.executable).parent / "kubectl-flowrun"
        argv = [str(script)] if script.exists() else [sys.executable, "-m", "flowrun_operator.cli"]
        self.argv = [*argv, "ui", "--port", "0", "--kubeconfig", str(kubeconfig), *extra]
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.output: list[str] = []

    def start(self, timeout: float = 30) -> str:
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ}
        )
        found = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
                if match and not self.url:
                    self.url = match.group(1)
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(timeout):
            self.stop()
            raise AssertionError(f"the dashboard did not print its URL: {''.join(self.output)}")
        return self.url

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def texts(driver: webdriver.Chrome, css: str, attribute: str | None = None) -> list[Any]:
    """The text (or an attribute) of every element matching ``css``, in document order."""
    script = (
        "return [...document.querySelectorAll(arguments[0])].map(e => arguments[1] ? e.getAttribute(arguments[1]) "
        ": e.textContent.trim())"
    )
    result: list[Any] = driver.execute_script(script, css, attribute)
    return result
