"""Headless Chromium for the page's browser tests (Debian's chromium + chromium-driver, through selenium).

Without a browser those tests skip with one line (NEEDS_BROWSER), except under CI (SEGMENT_ELT_CI=1)
where the `browser` fixture (conftest.py) fails instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

WAIT_S = 20


def _browser_paths() -> tuple[str, str] | None:
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


PATHS = _browser_paths()
MISSING = "no chromium + chromedriver on PATH (apt-get install chromium chromium-driver)"
# Skipped before the API server starts; under CI the browser fixture fails instead.
NEEDS_BROWSER = pytest.mark.skipif(PATHS is None and os.environ.get("SEGMENT_ELT_CI") != "1", reason=MISSING)


def wait(driver, condition, timeout: float = WAIT_S):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def open_view(driver, airflow, route: str, first_element: str):
    """Open an external view of Airflow's nav (/plugin/<route>) and switch into the page's iframe."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    driver.switch_to.default_content()
    driver.get(f"{airflow.url}/plugin/{route}")
    wait(driver, ec.frame_to_be_available_and_switch_to_it((By.CSS_SELECTOR, "iframe")))
    return wait(driver, ec.presence_of_element_located((By.CSS_SELECTOR, first_element)))


def shoot(driver, shots: Path, name: str) -> Path:
    driver.switch_to.default_content()
    path = shots / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    return path
