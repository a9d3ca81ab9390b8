"""The dashboard (`kubectl flowrun ui`, a real process) in a real headless Chromium, against the cluster under
test with the operator running: live runs table, a DAG run's timeline, a limit's waiting line."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from flowrun_operator.client import ConcurrencyLimits, Connection, FlowRuns
from support.browser import DashboardProcess, chromium, texts
from support.flowruns import flowrun, selector_limit, task
from support.kube import Cluster, Kubectl, pod_template
from support.operator import OperatorProcess

pytestmark = pytest.mark.integration

TIMEOUT = 90.0
LONG = 300.0


@pytest.fixture(scope="module")
def dashboard(cluster: Cluster) -> Iterator[DashboardProcess]:
    process = DashboardProcess(cluster.kubeconfig)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def runs(cluster: Cluster, namespace: str) -> Iterator[FlowRuns]:
    connection = Connection(str(cluster.kubeconfig))
    try:
        yield FlowRuns(namespace, connection)
    finally:
        connection.close()


def until(driver: webdriver.Chrome, predicate: Any, timeout: float = TIMEOUT, message: str = "") -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(predicate, message)


def test_runs_page_shows_a_new_run_without_a_reload(
    operator: OperatorProcess, dashboard: DashboardProcess, browser: webdriver.Chrome, runs: FlowRuns, namespace: str
) -> None:
    runs.create("before", {"flow": "etl", "template": pod_template(0)})
    browser.get(f"{dashboard.url}runs?namespace={namespace}")
    until(browser, lambda d: d.execute_script("return document.body.dataset.rendered") == "runs")
    until(browser, lambda d: texts(d, "#runs tr", "data-name") == ["before"], message="the existing run")
    # Anything a reload would wipe out: a value on window, and the navigation entries.
    browser.execute_script("window.__sameDocument = 42")

    runs.create("after", {"flow": "report", "template": pod_template(0.5)}, labels={"team": "ml"})

    until(browser, lambda d: "after" in texts(d, "#runs tr", "data-name"), message="the new run in the table")
    until(
        browser,
        lambda d: texts(d, '#runs tr[data-name="after"]', "data-phase") == ["Succeeded"],
        message="the new run's phase to reach Succeeded on the page",
    )
    assert browser.execute_script("return window.__sameDocument") == 42
    assert browser.execute_script("return performance.getEntriesByType('navigation').length") == 1
    (row,) = texts(browser, '#runs tr[data-name="after"]')
    assert "report" in row and "team=ml" in row

    # Filters go to the API server as selectors; the table shows only what matches.
    flow = browser.find_element(By.ID, "f-flow")
    flow.send_keys("report")
    until(browser, lambda d: texts(d, "#runs tr", "data-name") == ["after"], message="only the report run")
    assert "flow=report" in browser.current_url


def test_timeline_of_a_dag_run(
    operator: OperatorProcess, dashboard: DashboardProcess, browser: webdriver.Chrome, runs: FlowRuns, namespace: str
) -> None:
    # Listed out of dependency order on purpose.
    runs.create(
        "dag",
        {
            "flow": "etl",
            "tasks": [
                task("load", duration=0.2, dependsOn=["clean", "enrich"]),
                task("clean", duration=0.3, dependsOn=["extract"]),
                task("extract", duration=0.3),
                task("enrich", duration=0.2, dependsOn=["extract"]),
            ],
        },
    )
    runs.create(
        "broken",
        {
            "flow": "etl",
            "tasks": [
                task("extract", duration=0.2),
                task("enrich", duration=0.2, exit_code=1, retries=1, dependsOn=["extract"]),
                task("load", dependsOn=["enrich"]),
            ],
        },
    )
    done = runs.wait("dag", timeout=TIMEOUT)
    assert done.phase == "Succeeded"

    browser.get(f"{dashboard.url}runs/{namespace}/dag")
    until(browser, lambda d: d.execute_script("return document.body.dataset.rendered") == "run")
    order = texts(browser, "#gantt .gantt-row", "data-task")
    assert sorted(order) == ["clean", "enrich", "extract", "load"]
    position = {name: i for i, name in enumerate(order)}
    for t in done.task_runs:  # every task after all of its dependencies
        assert all(position[d] < position[t.name] for d in t.depends_on), (order, t.name, t.depends_on)
    assert order[0] == "extract" and order[-1] == "load"
    # One bar per task, in the same order, each starting no earlier than its dependencies' bars end.
    bars = browser.execute_script(
        "return [...document.querySelectorAll('#gantt .gantt-row')].map(g => {"
        " const b = g.querySelectorAll('rect.bar');"
        " return [g.dataset.task, b.length, b.length ? b[0].x.baseVal.value : null,"
        " b.length ? b[0].x.baseVal.value + b[0].width.baseVal.value : null]; })"
    )
    assert [b[0] for b in bars] == order and all(b[1] == 1 for b in bars), bars
    x = {b[0]: (b[2], b[3]) for b in bars}
    for t in done.task_runs:
        for dep in t.depends_on:
            assert x[dep][1] <= x[t.name][0] + 1, (dep, t.name, x)
    edges = texts(browser, "#gantt path.edge", "data-from")
    assert len(edges) == sum(len(t.depends_on) for t in done.task_runs) == 4
    assert texts(browser, "#parameters") == ["{}"]
    history = " ".join(texts(browser, "#history tbody tr"))
    assert "Finished=True" in history and "Admitted=True" in history

    broken = runs.wait("broken", timeout=TIMEOUT)
    assert broken.phase == "Failed"
    browser.get(f"{dashboard.url}runs/{namespace}/broken")
    until(browser, lambda d: d.execute_script("return document.body.dataset.rendered") == "run")
    assert texts(browser, "#gantt .gantt-row", "data-task") == ["extract", "enrich", "load"]
    phases = texts(browser, "#gantt .gantt-row", "data-phase")
    assert phases == ["Succeeded", "Failed", "Skipped"]
    # The retry is visible: two attempt outlines on enrich's bar; the skipped task has no bar.
    assert texts(browser, '#gantt .gantt-row[data-task="enrich"] rect.attempt', "data-attempt") == ["1", "2"]
    assert texts(browser, '#gantt .gantt-row[data-task="load"] rect.bar') == []
    assert texts(browser, '#gantt .gantt-row[data-task="load"] .skipped-label') == ["skipped"]
    # Read-only: no buttons without --allow-writes, and the API refuses the action.
    assert browser.find_elements(By.ID, "retry") == []
    request = urllib.request.Request(
        f"{dashboard.url}api/runs/{namespace}/broken/retry", method="POST", headers={"X-Flowrun-Action": "1"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403


def test_limit_page_lists_waiters_in_admission_order(
    operator: OperatorProcess,
    dashboard: DashboardProcess,
    browser: webdriver.Chrome,
    runs: FlowRuns,
    kubectl: Kubectl,
    namespace: str,
    cluster: Cluster,
) -> None:
    ml = {"team": "ml"}
    kubectl.apply(selector_limit("gpu", ml, 1), namespace)
    kubectl.apply(flowrun("holder", duration=LONG, labels=ml), namespace)
    runs.wait("holder", until="Running", timeout=TIMEOUT)
    browser.get(f"{dashboard.url}limits/{namespace}/gpu")
    until(browser, lambda d: d.execute_script("return document.body.dataset.rendered") == "limits")

    # Created after the page loaded: c and a FIFO at priority 0, b ahead of them at priority 5.
    for name, priority in (("c", 0), ("a", 0), ("b", 5)):
        kubectl.apply(flowrun(name, duration=LONG, labels=ml, priority=priority), namespace)
        time.sleep(1.1)  # distinct creation seconds

    def waiting_rows(d: webdriver.Chrome) -> list[list[str]]:
        rows: list[list[str]] = d.execute_script(
            "return [...document.querySelectorAll('[data-limit=\"gpu\"] table.waiting tbody tr')]"
            ".map(r => [...r.cells].map(c => c.textContent.trim()))"
        )
        return [r[:5] for r in rows]  # #, position, run, task, priority

    expected = ["b", "c", "a"]
    # The line is in admission order at once; the positions in the statuses follow at the operator's paced rate.
    until(
        browser,
        lambda d: [r[2] for r in waiting_rows(d)] == expected,
        message=f"the waiting line {expected} on the page",
    )
    rows = waiting_rows(browser)
    assert [(r[0], r[2], r[3], r[4]) for r in rows] == [
        ("1", "b", "-", "5"),
        ("2", "c", "-", "0"),
        ("3", "a", "-", "0"),
    ]
    # The positions the statuses hold (refreshed at the operator's paced rate) never contradict that order.
    positions = [int(r[1]) for r in rows]
    assert positions == sorted(positions) and positions[0] == 1, rows
    # The page's order is the client's: positions from the statuses, ties in admission order.
    assert [w.run for w in ConcurrencyLimits(namespace, runs.connection).get("gpu").waiting] == expected
    assert texts(browser, '[data-limit="gpu"] .in-use') == ["1/1"]
    assert texts(browser, '[data-limit="gpu"] ul.holders li') == ["holder"]

    # The holder is cancelled with the Cancel button of a dashboard started with --allow-writes, in a second
    # tab; b is admitted and leaves the line on the first tab's page.
    limits_tab = browser.current_window_handle
    writer = DashboardProcess(cluster.kubeconfig, "--allow-writes")
    writer.start()
    try:
        browser.switch_to.new_window("tab")
        browser.get(f"{writer.url}runs/{namespace}/holder")
        until(browser, lambda d: d.find_elements(By.ID, "cancel"), message="the Cancel button")
        assert browser.find_elements(By.ID, "retry") == []  # only a Failed run can be retried
        # The page re-renders on every watch event of the run, replacing the button: find and click it
        # again when the element found was replaced before the click.
        until(browser, click_if_present("cancel"), message="a click on the Cancel button")
        assert runs.wait("holder", timeout=TIMEOUT).phase == "Cancelled"
        browser.close()
    finally:
        browser.switch_to.window(limits_tab)
        writer.stop()
    until(
        browser,
        lambda d: texts(d, '[data-limit="gpu"] table.waiting tbody tr', "data-run") == ["c", "a"],
        message="b admitted, c and a still waiting",
    )
    detail = json.loads(urllib.request.urlopen(f"{dashboard.url}api/limits/{namespace}/gpu", timeout=10).read())
    assert [w["run"] for w in detail["items"][0]["waiting"]] == ["c", "a"]


def click_if_present(element_id: str) -> Callable[[webdriver.Chrome], bool]:
    def click(driver: webdriver.Chrome) -> bool:
        try:
            driver.find_element(By.ID, element_id).click()
        except (StaleElementReferenceException, NoSuchElementException):
            return False
        return True

    return click
