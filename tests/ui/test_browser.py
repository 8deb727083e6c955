"""The Segment page in a real headless Chromium (Debian's chromium + chromium-driver, through selenium):
sign in on Airflow's login page, open each view inside Airflow's UI, watch the debugger pick up an
event posted after the page loaded, press Reconcile. A screenshot of each view is saved under
the pytest basetemp (screenshots/), or SEGMENT_ELT_SCREENSHOTS_DIR (docs/ui.md#screenshots).

Without a browser these tests skip with one line, except under CI (SEGMENT_ELT_CI=1) where they fail.
"""

from __future__ import annotations

from segment_elt.local import samples
from tests.ui.browser import NEEDS_BROWSER, open_view, shoot, wait
from tests.ui.conftest import ACCOUNT, ORG

pytestmark = NEEDS_BROWSER


def test_sign_in_and_use_every_view(browser, airflow, landed, shots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    driver = browser
    driver.get(f"{airflow.url}/auth/login?next=/plugin/segment-connections")
    wait(driver, ec.presence_of_element_located((By.NAME, "username"))).send_keys("user")
    driver.find_element(By.NAME, "password").send_keys(airflow.passwords["user"])
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver, ec.url_contains("/plugin/segment-connections"))

    # connections, inside Airflow's UI
    table = open_view(driver, airflow, "segment-connections", "#connections")
    assert landed.connection_id in table.text and ORG in table.text
    shoot(driver, shots, "connections")

    # the debugger: an event posted after the page loaded appears without a reload
    open_view(driver, airflow, "segment-connections", "#connections")
    driver.find_element(By.LINK_TEXT, landed.connection_id).click()
    accepted = wait(driver, ec.presence_of_element_located((By.CSS_SELECTOR, "#accepted tbody")))
    driver.execute_script("window.loadedMarker = 1")
    assert "u-browser" not in accepted.text
    assert landed.post(samples.event("track", user_id="u-browser", name="Report Created")).status_code == 200
    wait(driver, ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#accepted tbody"), "u-browser"))
    assert driver.execute_script("return window.loadedMarker") == 1  # the same page: no reload happened
    assert "401" in driver.find_element(By.CSS_SELECTOR, "#rejected tbody").text
    shoot(driver, shots, "debugger")

    # the account view: chart, engagement, sessions, adoption, components, timeline
    # (reached from the debugger's resolved account link)
    driver.switch_to.frame(driver.find_element(By.CSS_SELECTOR, "iframe"))
    driver.find_element(By.LINK_TEXT, ACCOUNT["account_id"]).click()
    chart = wait(driver, ec.presence_of_element_located((By.CSS_SELECTOR, "#daily-chart")))
    assert len(chart.find_elements(By.TAG_NAME, "rect")) > 5
    assert driver.find_elements(By.CSS_SELECTOR, "#components tbody tr")
    assert driver.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")
    assert "Active users" in driver.find_element(By.ID, "engagement").text
    assert driver.find_elements(By.CSS_SELECTOR, "#sessions tbody tr")
    assert driver.find_elements(By.CSS_SELECTOR, "#adoption tbody tr")
    shoot(driver, shots, "account")

    # identity and outbound
    assert "how to edit" in open_view(driver, airflow, "segment-identity", "#rules-help").text
    shoot(driver, shots, "identity")
    open_view(driver, airflow, "segment-outbound", "main h1")
    assert landed.connection_id in driver.find_element(By.TAG_NAME, "main").text
    shoot(driver, shots, "outbound")

    # Reconcile from the connections view: the page links to the run it triggered
    open_view(driver, airflow, "segment-connections", "#connections")
    driver.find_element(By.CSS_SELECTOR, "#connections button[type=submit]").click()
    run_link = wait(driver, ec.presence_of_element_located((By.ID, "run-link")))
    assert "/dags/segment_reconcile/runs/" in run_link.get_attribute("href")
    run_id = run_link.text
    shoot(driver, shots, "reconcile")
    driver.switch_to.frame(driver.find_element(By.CSS_SELECTOR, "iframe"))
    driver.find_element(By.ID, "run-link").click()  # the run's page in Airflow's UI
    driver.switch_to.default_content()
    wait(driver, ec.url_contains("/dags/segment_reconcile/runs/"))
    wait(driver, ec.text_to_be_present_in_element((By.TAG_NAME, "body"), run_id))
    shoot(driver, shots, "reconcile-run")
