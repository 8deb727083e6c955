"""The Segment page behind a path prefix: [api] base_url http://127.0.0.1:<port>/airflow, with a real nginx on that
port forwarding only /airflow/ to the API server (tests/ui/conftest.py, airflow_behind_proxy). Every URL a view prints
(links, forms, style sheet, scripts and the debugger's refresh source), every redirect and the nav entries stay under
the prefix and answer; the browser test then uses them as a person would.
"""

from __future__ import annotations

from html.parser import HTMLParser

import requests

from tests.ui.browser import NEEDS_BROWSER, open_view, shoot, wait
from tests.ui.conftest import ACCOUNT, ORG, PROXY_PATH

URL_ATTRIBUTES = {"href", "src", "action", "data-source", "data-accounts"}


class _Urls(HTMLParser):
    def __init__(self):
        super().__init__()
        self.found: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.found += [(tag, name, value) for name, value in attrs if name in URL_ATTRIBUTES and value is not None]


def urls_of(html: str) -> list[tuple[str, str, str]]:
    """(tag, attribute, URL) of every URL the page's HTML carries."""
    parser = _Urls()
    parser.feed(html)
    return parser.found


def origin(airflow) -> str:
    return airflow.url.removesuffix(PROXY_PATH)


def views(landed) -> list[str]:
    return [
        "/connections",
        f"/connections/{landed.connection_id}/debugger",
        f"/accounts/{ORG}/{ACCOUNT['account_id']}",
        "/identity",
        "/identity/rules",
        "/outbound",
        "/privacy",
    ]


def test_the_proxy_forwards_only_the_prefix(airflow_behind_proxy):
    assert requests.get(f"{origin(airflow_behind_proxy)}/segment/connections", timeout=10).status_code == 404
    assert requests.get(f"{airflow_behind_proxy.url}/api/v2/monitor/health", timeout=10).status_code == 200


def test_the_nav_entries_are_under_the_prefix(airflow_behind_proxy):
    plugins = requests.get(
        f"{airflow_behind_proxy.url}/api/v2/plugins",
        headers={"Authorization": f"Bearer {airflow_behind_proxy.token('admin')}"},
        timeout=10,
    ).json()["plugins"]
    hrefs = {p["name"]: [v["href"] for v in p["external_views"]] for p in plugins}
    assert hrefs["segment_page"] == [
        "/airflow/segment/connections",
        "/airflow/segment/identity",
        "/airflow/segment/outbound",
        "/airflow/segment/privacy",
    ]
    assert hrefs["cosmos"] == ["/airflow/cosmos/segment_elt/dbt_docs_index.html"]


def test_every_url_of_every_view_is_under_the_prefix_and_answers(airflow_behind_proxy, landed):
    client = airflow_behind_proxy.session("viewer")
    to_get = set()
    for view in views(landed):
        answer = client.get(f"{airflow_behind_proxy.url}/segment{view}", timeout=20)
        assert answer.status_code == 200, f"{view}: {answer.status_code}"
        for tag, attribute, url in urls_of(answer.text):
            assert url.startswith(f"{PROXY_PATH}/"), f"{view}: <{tag} {attribute}={url!r}> is not under {PROXY_PATH}/"
            if tag != "form":  # the forms are posted below
                to_get.add(url + ACCOUNT["account_id"] if attribute == "data-accounts" else url)
    for url in sorted(to_get):
        answer = client.get(origin(airflow_behind_proxy) + url, timeout=30)
        assert answer.status_code == 200, f"{url}: {answer.status_code} {answer.text[:200]}"
    assert f"{PROXY_PATH}/cosmos/segment_elt/dbt_docs_index.html" in to_get
    assert {f"{PROXY_PATH}/segment/static/segment.css", f"{PROXY_PATH}/segment/static/debugger.js"} <= to_get


def test_forms_and_redirects_stay_under_the_prefix(airflow_behind_proxy, landed):
    client = airflow_behind_proxy.session("user")
    base, page = origin(airflow_behind_proxy), f"{airflow_behind_proxy.url}/segment"
    index = client.get(f"{page}/", allow_redirects=False, timeout=10)
    assert (index.status_code, index.headers["location"]) == (303, f"{PROXY_PATH}/segment/connections")

    debugger = client.get(f"{page}/connections/{landed.connection_id}/debugger", timeout=20).text
    allowlist = next(url for tag, _, url in urls_of(debugger) if tag == "form" and url.endswith("/allowlist"))
    added = client.post(base + allowlist, data={"add": "Prefix Tested"}, allow_redirects=False, timeout=10)
    assert added.status_code == 303 and added.headers["location"].startswith(f"{PROXY_PATH}/segment/connections/")
    back = client.get(base + added.headers["location"], timeout=20)
    assert back.status_code == 200 and 'value="Prefix Tested"' in back.text
    assert client.post(base + allowlist, data={"remove": "Prefix Tested"}, timeout=20).status_code == 200

    reconcile = next(url for tag, _, url in urls_of(debugger) if tag == "form" and url.endswith("/reconcile"))
    triggered = client.post(base + reconcile, timeout=30)
    assert triggered.status_code == 200, triggered.text
    run_link = next(url for _, _, url in urls_of(triggered.text) if "/dags/" in url)
    assert run_link.startswith(f"{PROXY_PATH}/dags/segment_reconcile/runs/")


def test_the_dbt_docs_under_the_prefix_need_a_signed_in_reader(airflow_behind_proxy):
    docs = f"{airflow_behind_proxy.url}/cosmos/segment_elt/dbt_docs_index.html"
    assert requests.get(docs, timeout=10).status_code == 401
    assert requests.get(docs, cookies={"_token": "forged"}, timeout=10).status_code == 403
    assert airflow_behind_proxy.session("viewer").get(docs, timeout=20).status_code == 200


@NEEDS_BROWSER
def test_a_person_uses_every_link_and_form_behind_the_prefix(browser, airflow_behind_proxy, landed, shots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select

    driver, airflow = browser, airflow_behind_proxy

    def frame():
        driver.switch_to.default_content()
        driver.switch_to.frame(driver.find_element(By.CSS_SELECTOR, "iframe"))

    def heading() -> str:
        return wait(driver, ec.presence_of_element_located((By.CSS_SELECTOR, "main h1"))).text

    def click(element) -> None:
        """Click a link or a form's button inside the page and wait until the frame holds the next page."""
        old = driver.find_element(By.TAG_NAME, "html")
        element.click()
        wait(driver, ec.staleness_of(old))
        wait(driver, ec.presence_of_element_located((By.CSS_SELECTOR, "main h1")))

    def follow(text: str) -> None:
        click(driver.find_element(By.LINK_TEXT, text))

    def location(part: str) -> str:
        return driver.execute_script(f"return location.{part}")  # the frame's own URL, not the window's

    driver.get(f"{airflow.url}/auth/login?next={PROXY_PATH}/plugin/segment-connections")
    wait(driver, ec.presence_of_element_located((By.NAME, "username"))).send_keys("user")
    driver.find_element(By.NAME, "password").send_keys(airflow.passwords["user"])
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver, ec.url_contains("/plugin/segment-connections"))

    open_view(driver, airflow, "segment-connections", "#connections")
    nav = driver.find_element(By.TAG_NAME, "nav")
    assert nav.value_of_css_property("background-color") == "rgba(240, 244, 248, 1)"  # the style sheet loaded
    for name, title in (
        ("Identity", "Identity resolution"),
        ("Outbound", "Outbound syncs"),
        ("Connections", "Segment connections"),
    ):
        follow(name)
        assert heading() == title
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.LINK_TEXT, "dbt docs").click()
    wait(driver, ec.staleness_of(old))
    assert location("pathname") == f"{PROXY_PATH}/cosmos/segment_elt/dbt_docs_index.html"
    assert "dbt" in driver.execute_script("return document.title").lower()

    # the debugger: its script refreshes from the prefixed JSON route; the allowlist forms add and remove a name
    open_view(driver, airflow, "segment-connections", "#connections")
    follow(landed.connection_id)
    wait(driver, ec.text_to_be_present_in_element((By.ID, "status"), "updated"))
    driver.find_element(By.NAME, "add").send_keys("Browser Prefixed")
    click(driver.find_element(By.CSS_SELECTOR, "#allowlist button[type=submit]:not([title])"))
    assert "Browser Prefixed ✕" in driver.find_element(By.ID, "allowlist").text
    click(driver.find_element(By.XPATH, "//button[@title='remove'][contains(., 'Browser Prefixed')]"))
    assert "Browser Prefixed ✕" not in driver.find_element(By.ID, "allowlist").text
    Select(driver.find_element(By.NAME, "show")).select_by_value("accepted")
    click(driver.find_element(By.CSS_SELECTOR, "#filter button"))
    assert location("pathname").startswith(f"{PROXY_PATH}/segment/") and "show=accepted" in location("search")
    assert driver.find_elements(By.ID, "accepted") and not driver.find_elements(By.ID, "rejected")
    shoot(driver, shots, "prefixed-debugger")

    # the account view and its selector
    frame()
    follow(ACCOUNT["account_id"])
    assert len(driver.find_elements(By.CSS_SELECTOR, "#daily-chart rect")) > 5
    old = driver.find_element(By.TAG_NAME, "html")
    Select(driver.find_element(By.NAME, "event_name")).select_by_value("Report Created")  # submits on change
    wait(driver, ec.staleness_of(old))
    assert "event_name=Report+Created" in location("search")
    assert [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".legend span")] == ["Report Created"]

    # identity's help link, then Reconcile and the run it links to, in Airflow's UI under the prefix
    open_view(driver, airflow, "segment-identity", "#rules-help")
    follow("how to edit the identity rules")
    assert driver.find_element(By.ID, "rules").text.startswith("connection_id,chain")
    open_view(driver, airflow, "segment-connections", "#connections")
    click(driver.find_element(By.CSS_SELECTOR, "#connections button[type=submit]"))
    run_id = wait(driver, ec.presence_of_element_located((By.ID, "run-link"))).text
    driver.find_element(By.ID, "run-link").click()
    driver.switch_to.default_content()
    wait(driver, ec.url_contains(f"{PROXY_PATH}/dags/segment_reconcile/runs/"))
    wait(driver, ec.text_to_be_present_in_element((By.TAG_NAME, "body"), run_id))
    shoot(driver, shots, "prefixed-reconcile-run")
