"""Headless Chromium for the browser tests: Debian's `chromium` and `chromium-driver`,
installed with apt-get when missing and running as root (as CI does), else a reason to skip."""

import os
import shutil
import subprocess
from dataclasses import dataclass

PACKAGES = ("chromium", "chromium-driver")
INSTALL_SECONDS = 600


@dataclass(frozen=True)
class Chromium:
    browser: str | None  # the executable's path; None when it cannot be had
    driver: str | None
    reason: str = ""  # why not, when it cannot be had


def _found() -> tuple[str | None, str | None]:
    return shutil.which("chromium"), shutil.which("chromedriver")


def ensure_chromium() -> Chromium:
    """Return Chromium and its driver, installing Debian's packages first if need be."""
    browser, driver = _found()
    if browser and driver:
        return Chromium(browser, driver)
    if os.geteuid() != 0:
        return Chromium(
            None,
            None,
            "chromium and chromium-driver are not installed and the "
            "tests are not running as root to apt-get install them",
        )
    if shutil.which("apt-get") is None:
        return Chromium(None, None, "chromium is not installed and there is no apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *PACKAGES])
    for step in steps:
        try:
            done = subprocess.run(
                step,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=INSTALL_SECONDS,
            )
        except subprocess.TimeoutExpired:
            return Chromium(None, None, f"{' '.join(step)} took over {INSTALL_SECONDS} s")
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            return Chromium(None, None, f"{' '.join(step)} failed: {' '.join(tail)}")
    browser, driver = _found()
    if not (browser and driver):
        return Chromium(
            None, None, "apt-get installed chromium but chromium or chromedriver is not on PATH"
        )
    return Chromium(browser, driver)


if __name__ == "__main__":
    print(ensure_chromium())
