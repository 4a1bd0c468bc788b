"""The console in a real browser: headless chromium driven by Selenium against ``fedwarden console``.

Signs in, opens every page of a seeded store (a finished run, two model versions,
a drift change), promotes a model as an operator, is refused as an auditor, sees
a new drift change, and verifies the audit chain. A screenshot of each page is
saved to ``$FEDWARDEN_CONSOLE_SCREENSHOTS`` (default: a pytest temporary folder).
Skipped, saying why, where no chromium or chromedriver can be found.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from server.store.drift import record_drift_change
from server.store.models import ModelVersion

from .conftest import LiveConsole, Seeded, drift_features


def wait_for(browser, css: str, timeout_s: float = 20.0):  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout_s).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
    )


def sign_in(browser, base: str, key: str) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    browser.get(f"{base}/signin")
    browser.find_element(By.ID, "api_key").send_keys(key)
    browser.find_element(By.ID, "signin").click()
    wait_for(browser, "header.top nav")


def shoot(browser, folder: Path, name: str) -> Path:  # type: ignore[no-untyped-def]
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1400, max(900, min(int(height) + 40, 4000)))
    path = folder / f"{name}.png"
    browser.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    return path


def severe_console_errors(browser) -> list[str]:  # type: ignore[no-untyped-def]
    """The pages' console errors (a CSP violation or a script error shows up here); the
    refusals the tests provoke on purpose (403) are not errors."""
    return [entry["message"] for entry in browser.get_log("browser")
            if entry["level"] == "SEVERE" and "status of 403" not in entry["message"]]


def test_an_operator_reads_every_page_and_promotes(
    browser, live_console: LiveConsole, seeded: Seeded, screenshots: Path
) -> None:
    from selenium.webdriver.common.by import By

    base = live_console.url
    sign_in(browser, base, seeded.keys["ops"])

    wait_for(browser, "#epsilon-budgets[data-drawn='1'] .main-svg")
    assert "Cleveland" in browser.find_element(By.ID, "budgets").text
    assert "revoked" not in browser.page_source  # an operator cannot read node keys
    shoot(browser, screenshots, "01-overview-operator")

    browser.get(f"{base}/runs")
    assert "heart-demo" in browser.find_element(By.CSS_SELECTOR, "table.runs").text
    shoot(browser, screenshots, "02-runs")

    browser.find_element(By.CSS_SELECTOR, "table.runs a").click()
    wait_for(browser, "#metrics[data-drawn='1'] .main-svg")
    wait_for(browser, "#epsilon[data-drawn='1'] .main-svg")
    rounds = browser.find_element(By.ID, "rounds").text
    assert "Hungary" in rounds and "Switzerland" in rounds
    assert len(browser.find_elements(By.CSS_SELECTOR, "#checkpoints tbody tr")) == 3
    shoot(browser, screenshots, "03-run")

    browser.get(f"{base}/models")
    shoot(browser, screenshots, "04-models")
    browser.find_element(By.LINK_TEXT, "Promote…").click()
    wait_for(browser, "#confirm-promote")
    shoot(browser, screenshots, "05-promote-confirm")
    browser.find_element(By.ID, "confirm-promote").click()
    wait_for(browser, "p.ok")
    assert "production" in browser.find_element(By.CSS_SELECTOR, "dl.facts").text
    shoot(browser, screenshots, "06-model-promoted")
    with seeded.store.session() as session:
        stage = session.scalars(select(ModelVersion.stage).where(ModelVersion.version == 2)).one()
    assert stage == "production"
    assert severe_console_errors(browser) == []


def test_an_auditor_reads_the_audit_log_verifies_it_and_cannot_promote(
    browser, live_console: LiveConsole, seeded: Seeded, screenshots: Path
) -> None:
    from selenium.webdriver.common.by import By

    base = live_console.url
    sign_in(browser, base, seeded.keys["eve"])
    assert "revoked" in browser.find_element(By.ID, "institutions").text  # auditors read node keys
    shoot(browser, screenshots, "07-overview-auditor")

    browser.get(f"{base}/models/heart/1/promote")
    assert "Not allowed" in browser.title
    assert "model:promote" in browser.find_element(By.CSS_SELECTOR, "p.error").text
    shoot(browser, screenshots, "08-promote-refused")

    browser.get(f"{base}/audit?actor=eve&action=authorize")
    assert "denied" in browser.find_element(By.ID, "audit-events").text  # the refusal, on record
    browser.get(f"{base}/audit")
    browser.find_element(By.ID, "verify-chain").click()
    result = wait_for(browser, "#verify-slot #verify-result")
    assert "The chain holds" in result.text
    assert browser.current_url.endswith("/audit")  # fetched in place, no reload
    shoot(browser, screenshots, "09-audit-verified")
    assert severe_console_errors(browser) == []


def test_a_drift_change_shows_on_the_drift_page(
    browser, live_console: LiveConsole, seeded: Seeded, screenshots: Path
) -> None:
    from selenium.webdriver.common.by import By

    base = live_console.url
    sign_in(browser, base, seeded.keys["ops"])
    browser.get(f"{base}/drift/heart")
    assert "warning" in browser.find_element(By.ID, "drift-status").text

    with seeded.store.session() as session:
        record_drift_change(session=session, model="heart", version=1, previous="warning",
                            status="drift", window_rows=800, window_span_s=5400.0,
                            features=drift_features("drift", shift=0.4))
    browser.get(f"{base}/drift/heart")

    assert "drift" in browser.find_element(By.ID, "drift-status").text.split(" since ")[0]
    assert "A retraining run is recommended" in browser.page_source
    assert "Cleveland" in browser.find_element(By.ID, "advice").text
    wait_for(browser, "#drift-scores[data-drawn='1'] .main-svg")
    wait_for(browser, "#hist-1[data-drawn='1'] .main-svg")
    shoot(browser, screenshots, "10-drift")
    browser.get(f"{base}/drift")
    assert "drift" in browser.find_element(By.ID, "drift-heads").text
    assert severe_console_errors(browser) == []


@pytest.fixture(autouse=True)
def _named_screenshots(screenshots: Path) -> None:
    """Say where the screenshots went (shown with -rA or on failure)."""
    print(f"console screenshots in {screenshots}")
