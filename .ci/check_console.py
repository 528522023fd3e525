"""The web console in a real headless Chromium, driven through WebDriver (Debian's chromium and
chromium-driver, the selenium client from PyPI):

- the console loads, makes no request to another origin and logs no error;
- a project and a HITL request created through the API after the page loaded appear without a
  reload; a click approves a pending request, reject (with a comment) and amend (JSON, refused
  while invalid) likewise, each checked through the API;
- a question containing `<img src=x onerror=alert(1)>` shows as text and runs nothing;
- the project and operations pages show the workflow, the board, a worker's progress as it is
  reported (still there after a reload), and the service levels; a workflow's gate is approved
  with a click and the workflow moves on;
- a workflow defined through the API with parallel phases and a fan-out is drawn as a graph: a box
  per phase with its state, an arrow per dependency, the fan-out's progress (`1/2`) as it moves;
  an approval for named assignees with a timeout shows them and the time left;
- the project page applies events where they belong: after it has loaded, a claim, a progress
  report and an artifact make it read nothing again but the artifact's content, when its summary
  is opened;
- after the server restarts the console says it is reconnecting, then catches up without a reload;
- with API keys the page asks for one; a read-write key sees its name and the buttons, a read-only
  key sees no action button;
- on a follower, the console reads and streams from the follower; an approval clicked there is
  refused by the follower (503 `not_leader`), sent to the leader it names, and comes back through
  the follower's stream.

Screenshots of each page go to the check's temporary directory; with --screenshots DIR they are
also copied there (the README's pictures, docs/console/)."""

import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import (
    ElementNotInteractableException,
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

import ci_common
from ci_common import free_port, start_flightdeck, stop


def wait_for(what, check, **limits):
    """ci_common's wait, where an element gone stale (its part of the page drawn again) counts as
    not yet."""
    def look():
        try:
            return check()
        except (StaleElementReferenceException, NoSuchElementException):
            return None
    return ci_common.wait_for(what, look, **limits)

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
XSS = "Ship it? <img src=x onerror=alert(1)><script>alert(2)</script>"


def call(base, method, path, body=None, key=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    if key:
        request.add_header("authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=30) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def browser():
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1100",
                "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def requested_urls(driver):
    """Every URL the page requested or opened a WebSocket to, from Chrome's performance log."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
        elif message["method"] == "Network.webSocketCreated":
            urls.append(message["params"]["url"])
    return urls


def errors(driver, allowed=()):
    """Console entries of level SEVERE, except those naming something in `allowed`."""
    return [e for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and not any(a in e["message"] for a in allowed)]


def find(driver, css, what, timeout=30):
    return wait_for(what, lambda: (driver.find_elements(By.CSS_SELECTOR, css) or [None])[0], timeout=timeout)


def shows(driver, css, what, check, timeout=30):
    """Waits until an element matching `css` passes `check`, finding it afresh at each look: a page
    drawn again (as events arrive, or the operations page's periodic refresh) replaces the
    elements read before."""
    def look():
        try:
            return next((e for e in driver.find_elements(By.CSS_SELECTOR, css) if check(e)), None)
        except (StaleElementReferenceException, NoSuchElementException):
            return None
    return wait_for(what, look, timeout=timeout)


def no_alert(driver):
    try:
        text = driver.switch_to.alert.text
    except NoAlertPresentException:
        return
    raise SystemExit(f"console: a script ran: an alert says {text!r}")


def shoot(driver, work, name, keep):
    path = os.path.join(work, f"{name}.png")
    driver.save_screenshot(path)
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(path, os.path.join(keep, f"{name}.png"))


def main():
    binary = sys.argv[1]
    keep = sys.argv[sys.argv.index("--screenshots") + 1] if "--screenshots" in sys.argv else None
    work = tempfile.mkdtemp()
    server, addr = start_flightdeck(binary, work, "--timer-tick-ms", "50")
    base = f"http://{addr}"
    processes = [server]
    driver = browser()
    try:
        driver.get(base + "/")
        find(driver, "#live[data-state='live']", "the console's event stream to be live")
        find(driver, "#inbox", "the home page")

        # Created through the API after the page loaded: shown without a reload.
        p = call(base, "POST", "/api/v1/projects", {"name": "console demo", "description": "a blog, built by agents"})["id"]
        find(driver, f"[data-project='{p}']", "the new project on the home page")
        call(base, "POST", f"/api/v1/projects/{p}/workflow", {"workflow": "sdlc", "context": {"goal": "a blog"}})
        asked = [call(base, "POST", "/api/v1/hitl", {"project_id": p, "question": q, "options": ["yes", "no"],
                                                    "expires_in_seconds": 3600})["request_id"]
                 for q in (XSS, "Reject this one?", "Amend this one?")]
        cards = [find(driver, f"[data-request='{r}']", f"request {r} in the inbox") for r in asked]

        # Text, never markup: the question reads as written, and nothing ran.
        question = cards[0].find_element(By.CSS_SELECTOR, ".question")
        assert question.text == XSS, question.text
        assert not cards[0].find_elements(By.TAG_NAME, "img"), "an <img> was created from a question"
        assert not driver.find_elements(By.CSS_SELECTOR, "main script"), "a <script> was created"
        no_alert(driver)
        shoot(driver, work, "home", keep)

        # Approve with a click.
        cards[0].find_element(By.CSS_SELECTOR, "[data-action='approve']").click()
        wait_for("the approval to reach the server",
                 lambda: call(base, "GET", f"/api/v1/hitl/{asked[0]}")["status"] == "approved")
        wait_for("the approved request to leave the inbox",
                 lambda: not driver.find_elements(By.CSS_SELECTOR, f"#inbox [data-request='{asked[0]}']"))
        # Reject with a comment.
        card = find(driver, f"[data-request='{asked[1]}']", "the second request")
        card.find_element(By.CSS_SELECTOR, "[data-action='reject']").click()
        card = find(driver, f"[data-request='{asked[1]}'] textarea[name='comment']", "the comment box")
        card.send_keys("not good enough <b>yet</b>")
        find(driver, f"[data-request='{asked[1]}'] [data-action='send-reject']", "the send button").click()
        rejected = wait_for("the rejection to reach the server",
                            lambda: (lambda r: r if r["status"] == "rejected" else None)(
                                call(base, "GET", f"/api/v1/hitl/{asked[1]}")))
        assert rejected["response_comment"] == "not good enough <b>yet</b>", rejected
        # The inbox drops it once the answer's event comes (the page is drawn again then: the
        # cards found before that are gone).
        wait_for("the rejected request to leave the inbox",
                 lambda: not driver.find_elements(By.CSS_SELECTOR, f"#inbox [data-request='{asked[1]}']"))
        # Amend: invalid JSON is refused before sending; valid JSON is sent as the content.
        card = find(driver, f"[data-request='{asked[2]}']", "the third request")
        card.find_element(By.CSS_SELECTOR, "[data-action='amend']").click()
        content = find(driver, f"[data-request='{asked[2]}'] textarea[name='content']", "the JSON editor")
        content.clear()
        content.send_keys('{"title": "better", ')
        send = find(driver, f"[data-request='{asked[2]}'] [data-action='send-amend']", "the send button")
        assert not send.is_enabled(), "invalid JSON can be sent"
        problem = driver.find_element(By.CSS_SELECTOR, f"[data-request='{asked[2]}'] [data-role='json-error']")
        assert "not valid JSON" in problem.text, problem.text
        content.send_keys('"pages": [1, 2]}')
        wait_for("the editor to accept the JSON", send.is_enabled)
        send.click()
        amended = wait_for("the amendment to reach the server",
                           lambda: (lambda r: r if r["status"] == "amended" else None)(
                               call(base, "GET", f"/api/v1/hitl/{asked[2]}")))
        assert amended["amended_content"]["amended_content"] == {"title": "better", "pages": [1, 2]}, amended
        # Answered elsewhere (here, through the API): the inbox drops it without a reload.
        other = call(base, "POST", "/api/v1/hitl", {"project_id": p, "question": "answered by the API"})["request_id"]
        find(driver, f"[data-request='{other}']", "the fourth request")
        call(base, "POST", f"/api/v1/hitl/{other}/respond", {"action": "approve"})
        wait_for("the answered request to leave the inbox",
                 lambda: not driver.find_elements(By.CSS_SELECTOR, f"#inbox [data-request='{other}']"))

        # The project page: phases, board, a worker's progress as reported.
        driver.get(f"{base}/#/project/{p}")
        find(driver, "#workflow [data-phase='0']", "the workflow's phases")
        find(driver, "#timeline [data-seq]", "the page's last section")
        requested_urls(driver)  # what the page read to open; from here on, what events make it read
        claimed = call(base, "POST", "/api/v1/tasks/claim", {"agent_type": "analyst", "worker_id": "analyst-1"})
        find(driver, f"[data-column='working'] [data-task='{claimed['task_id']}']", "the claimed task on the board")
        call(base, "POST", f"/api/v1/tasks/{claimed['task_id']}/progress",
             {"lease_id": claimed["lease_id"], "message": "drafting the specification", "percent": 40})
        wait_for("the progress on the task's card", lambda: "drafting the specification" in driver.find_element(
            By.CSS_SELECTOR, f"[data-task='{claimed['task_id']}'] .progress").text)
        call(base, "POST", "/api/v1/context/artifacts", {"project_id": p, "source_agent": "analyst",
                                                         "artifact_type": "software_specification",
                                                         "content": {"title": "Blog", "pages": ["home", "post"]}})
        artifact = find(driver, "#artifacts [data-artifact]", "the artifact")
        artifact.find_element(By.TAG_NAME, "summary").click()
        wait_for("the artifact's content, read when opened",
                 lambda: '"pages"' in artifact.find_element(By.CSS_SELECTOR, "pre").text)
        after_load = [u.split("?")[0] for u in requested_urls(driver) if u.startswith(base)]
        allowed = (f"{base}/api/v1/tasks/", f"{base}/api/v1/context/artifacts/")
        assert after_load and all(u.startswith(allowed) for u in after_load), \
            f"events made the project page read more than a task or the opened artifact: {after_load}"
        # The progress is still on the card, and after a reload too (the task list carries it).
        def progress_text():
            cards = driver.find_elements(By.CSS_SELECTOR, f"[data-task='{claimed['task_id']}'] .progress")
            return cards[0].text if cards else ""
        assert "drafting the specification" in progress_text(), progress_text()
        driver.refresh()
        wait_for("the progress after a reload", lambda: "drafting the specification 40 %" in progress_text())
        find(driver, "#artifacts [data-artifact]", "the artifact after the reload").find_element(
            By.TAG_NAME, "summary").click()
        find(driver, "#timeline [data-seq]", "the event timeline")
        shoot(driver, work, "project", keep)
        # The workflow's gate: the analyst and the architect finish, the architect's gate shows
        # on the page, a click approves it and the workflow hands off to the coder.
        call(base, "POST", f"/api/v1/tasks/{claimed['task_id']}/status",
             {"status": "completed", "output": {"spec": "done"}, "lease_id": claimed["lease_id"]})
        architect = wait_for("the architect's task", lambda: call(
            base, "POST", "/api/v1/tasks/claim", {"agent_type": "architect", "worker_id": "architect-1"}))
        call(base, "POST", f"/api/v1/tasks/{architect['task_id']}/status",
             {"status": "completed", "output": {"design": "done"}, "lease_id": architect["lease_id"]})
        gate = wait_for("the gate", lambda: call(base, "GET", f"/api/v1/projects/{p}/workflow")["phases"][1]["gate_request_id"])
        card = find(driver, f"#project-approvals [data-request='{gate}']", "the gate on the project page")
        card.find_element(By.CSS_SELECTOR, "[data-action='approve']").click()
        wait_for("the workflow to hand off to the coder", lambda: call(
            base, "GET", f"/api/v1/projects/{p}/workflow")["phases"][2]["status"] == "running")
        find(driver, "#workflow [data-phase='2'].status-running", "the coder's phase running on the page")

        # A team's own workflow as a graph: parallel phases, a join and a fan-out.
        call(base, "PUT", "/api/v1/workflows/essay", {"phases": [
            {"id": "plan", "agent_type": "planner", "instructions": "plan", "depends_on": []},
            {"id": "research", "agent_type": "researcher", "instructions": "research", "depends_on": ["plan"]},
            {"id": "outline", "agent_type": "writer", "instructions": "outline", "depends_on": ["plan"]},
            {"id": "draft", "agent_type": "drafter", "instructions": "write {item}",
             "depends_on": ["research", "outline"], "for_each": "plan.output.sections"},
            {"id": "edit", "agent_type": "editor", "instructions": "edit", "depends_on": ["draft"]},
        ]})
        q = call(base, "POST", "/api/v1/projects", {"name": "essay"})["id"]
        call(base, "POST", f"/api/v1/hitl/project/{q}/oversight-level", {"level": "low"})
        call(base, "POST", f"/api/v1/projects/{q}/workflow", {"workflow": "essay"})
        driver.get(f"{base}/#/project/{q}")
        find(driver, "#workflow .graph .node[data-node='0'].status-running", "the graph's running root")
        nodes = driver.find_elements(By.CSS_SELECTOR, "#workflow .graph .node")
        edges = driver.find_elements(By.CSS_SELECTOR, "#workflow .graph path.edge")
        assert (len(nodes), len(edges)) == (5, 5), (len(nodes), len(edges))

        def finish_one(agent, output):
            t = wait_for(f"a {agent} task", lambda: call(
                base, "POST", "/api/v1/tasks/claim", {"agent_type": agent, "worker_id": f"{agent}-1"}))
            call(base, "POST", f"/api/v1/tasks/{t['task_id']}/status",
                 {"status": "completed", "output": output, "lease_id": t["lease_id"]})

        finish_one("planner", {"sections": ["intro", "end"]})
        find(driver, "#workflow .graph .node[data-node='1'].status-running", "research running")
        find(driver, "#workflow .graph .node[data-node='2'].status-running", "outline running beside it")
        finish_one("researcher", {})
        finish_one("writer", {})
        finish_one("drafter", {"words": 100})
        def text_of(selector):
            # The graph is drawn again at every workflow event: an element read may be gone.
            try:
                return " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, selector))
            except StaleElementReferenceException:
                return ""

        wait_for("the fan-out's progress in its box",
                 lambda: "1/2" in text_of("#workflow .graph .node[data-node='3'] .fan-out"))
        shoot(driver, work, "workflow", keep)
        # An approval for named assignees with a timeout: who, and the time left.
        timed = call(base, "POST", "/api/v1/hitl", {
            "project_id": q, "question": "publish?", "assignees": ["alice"], "timeout_seconds": 3600,
            "on_timeout": "escalate", "escalate_to": ["lead"]})["request_id"]
        find(driver, f"#project-approvals [data-request='{timed}']", "the timed approval")
        card = f"#project-approvals [data-request='{timed}']"
        wait_for("its assignees and time left",
                 lambda: "for alice" in text_of(card) and "escalates in" in text_of(card))

        # Spend: a worker's usage and a project's budget, shown with its bar; raised with the mouse.
        sp = call(base, "POST", "/api/v1/projects", {"name": "spending"})["id"]
        call(base, "POST", f"/api/v1/projects/{sp}/tasks", {"agent_type": "spender", "instructions": "spend"})
        claimed = call(base, "POST", "/api/v1/tasks/claim", {"agent_type": "spender", "worker_id": "w"})
        call(base, "PUT", f"/api/v1/budgets/project:{sp}", {"max_tokens": 1000})
        call(base, "POST", f"/api/v1/tasks/{claimed['task_id']}/usage",
             {"lease_id": claimed["lease_id"], "report_id": "r1", "model": "model-x",
              "input_tokens": 900, "output_tokens": 0, "cost_usd": 0.42})

        # Operations.
        driver.get(f"{base}/#/ops")
        shows(driver, f"[data-budget='project:{sp}'][data-state='warning']",
              "the budget in warning, 900 of 1,000 tokens, its bar at 90 %",
              lambda b: "900 of 1,000 tokens" in b.text
              and b.find_elements(By.CSS_SELECTOR, ".bar[aria-valuenow='90']"))
        shows(driver, f"[data-spend-project='{sp}']", "the project's spend, named, $0.42",
              lambda row: "spending" in row.text and "$0.42" in row.text)
        find(driver, "[data-spend-agent='spender']", "the agent type's spend")
        def raised():
            # The page is drawn again as events arrive: a form read may be gone or not yet
            # usable, so each look finds it afresh and types again until the server has it.
            if call(base, "GET", f"/api/v1/budgets/project:{sp}")["max_tokens"] == 5000:
                return True
            try:
                form = driver.find_element(By.CSS_SELECTOR, f"[data-budget='project:{sp}'] form.raise")
                field = form.find_element(By.CSS_SELECTOR, "input")
                field.clear()
                field.send_keys("5000")
                form.find_element(By.CSS_SELECTOR, "[data-action='raise']").click()
            except (StaleElementReferenceException, ElementNotInteractableException, NoSuchElementException):
                pass
            return False

        wait_for("the raise to reach the server", raised)
        find(driver, f"[data-budget='project:{sp}'][data-state='ok']", "the raised budget, ok")
        find(driver, "[data-level='flightdeck:status_query']", "the service levels")
        find(driver, "[data-series='task_operation'] svg", "the charts")
        find(driver, "[data-component='store']", "the readiness checks")
        shoot(driver, work, "operations", keep)

        urls = requested_urls(driver)
        foreign = [u for u in urls
                   if not (u.startswith(base) or u.startswith(f"ws://{addr}") or u.startswith("data:")
                           or u.startswith("blob:"))]
        assert not foreign, f"requests to another origin: {foreign}"
        assert not errors(driver), errors(driver)
        no_alert(driver)

        # A restart: the console says it is reconnecting, then catches up without a reload.
        driver.get(base + "/")
        find(driver, "#live[data-state='live']", "the stream to be live")
        stop([server])
        processes.remove(server)
        find(driver, "#live[data-state='reconnecting']", "the console to notice the disconnect")
        assert "reconnecting" in driver.find_element(By.ID, "banner").text
        server, _ = start_flightdeck(binary, work, "--timer-tick-ms", "50", listen=addr)
        processes.append(server)
        late = call(base, "POST", "/api/v1/projects", {"name": "created during the reconnect"})["id"]
        find(driver, f"[data-project='{late}']", "the project created after the restart", timeout=60)
        find(driver, "#live[data-state='live']", "the stream to be live again", timeout=60)
        assert not driver.find_element(By.ID, "banner").is_displayed()
        print(f"console: loads from this origin only, shows text as text, approves, rejects and amends with "
              f"the mouse, shows spend and budgets and raises one, follows the event stream, and catches up "
              f"after a restart "
              f"({len(urls)} requests checked)")
    finally:
        driver.quit()
        stop(processes)

    signed_in(binary, keep)
    followed(binary)


def followed(binary):
    """A follower's console: its writes go to the leader it names (which allows the follower's
    origin), the answers come back through the follower's own event stream."""
    key = "replication-secret-0123456789"
    follower_base = f"http://127.0.0.1:{free_port()}"
    leader_work, follower_work = tempfile.mkdtemp(), tempfile.mkdtemp()
    leader, leader_addr = start_flightdeck(binary, leader_work, "--replication-key", key,
                                           "--cors-origins", follower_base)
    leader_base = f"http://{leader_addr}"
    processes = [leader]
    driver = None
    try:
        p = call(leader_base, "POST", "/api/v1/projects", {"name": "followed"})["id"]
        before = call(leader_base, "POST", "/api/v1/hitl",
                      {"project_id": p, "question": "in the snapshot?"})["request_id"]
        follower, _ = start_flightdeck(binary, follower_work, "--follow", leader_base,
                                       "--replication-key", key,
                                       listen=follower_base.removeprefix("http://"))
        processes.append(follower)
        driver = browser()
        driver.get(follower_base + "/")
        find(driver, "#live[data-state='live']", "the follower's event stream to be live")
        find(driver, f"[data-request='{before}']", "a request from the snapshot in the follower's inbox")
        after = call(leader_base, "POST", "/api/v1/hitl",
                     {"project_id": p, "question": "streamed?"})["request_id"]
        card = find(driver, f"[data-request='{after}']", "a streamed request in the follower's inbox")
        card.find_element(By.CSS_SELECTOR, "[data-action='approve']").click()
        wait_for("the approval to reach the leader",
                 lambda: call(leader_base, "GET", f"/api/v1/hitl/{after}")["status"] == "approved")
        wait_for("the approved request to leave the follower's inbox",
                 lambda: not driver.find_elements(By.CSS_SELECTOR, f"#inbox [data-request='{after}']"))
        # The next one goes to the leader directly.
        card = find(driver, f"[data-request='{before}']", "the other request")
        card.find_element(By.CSS_SELECTOR, "[data-action='approve']").click()
        wait_for("the second approval to reach the leader",
                 lambda: call(leader_base, "GET", f"/api/v1/hitl/{before}")["status"] == "approved")
        wait_for("the second request to leave the follower's inbox",
                 lambda: not driver.find_elements(By.CSS_SELECTOR, f"#inbox [data-request='{before}']"))
        writes = [u for u in requested_urls(driver) if "/respond" in u]
        on_follower = [u for u in writes if u.startswith(follower_base)]
        on_leader = [u for u in writes if u.startswith(leader_base)]
        assert len(on_follower) == 1 and writes[0] == on_follower[0], writes
        assert len(on_leader) >= 2 and len(on_follower) + len(on_leader) == len(writes), writes
        assert not errors(driver, allowed=("503",)), errors(driver, allowed=("503",))
        print("console: on a follower, reads and streams from it and sends approvals to its leader")
    finally:
        if driver is not None:
            driver.quit()
        stop(processes)


def signed_in(binary, keep):
    """With keys: the page asks for one; a key without the reviewer role (read-only, or a
    worker's) sees no action buttons."""
    work = tempfile.mkdtemp()
    writer, reader = "alice-secret-0123456789", "bots-secret-0123456789"
    worker = "crew-secret-0123456789"
    server, addr = start_flightdeck(binary, work, "--api-key", f"alice:rw:{writer}",
                                    "--api-key", f"bots:ro:{reader}",
                                    "--api-key", f"crew:worker:{worker}")
    base = f"http://{addr}"
    driver = browser()
    try:
        p = call(base, "POST", "/api/v1/projects", {"name": "keyed"}, key=writer)["id"]
        r = call(base, "POST", "/api/v1/hitl", {"project_id": p, "question": "ok?"}, key=writer)["request_id"]
        driver.get(base + "/")
        key = find(driver, "#signin input[type='password']", "the sign-in form")
        shoot(driver, work, "signin", keep)
        key.send_keys("wrong-key-0123456789")
        driver.find_element(By.CSS_SELECTOR, "#signin button[type='submit']").click()
        wait_for("the refusal", lambda: "not known" in driver.find_element(By.CSS_SELECTOR, "#signin .error").text)
        key = driver.find_element(By.CSS_SELECTOR, "#signin input[type='password']")
        key.clear()
        key.send_keys(writer)
        driver.find_element(By.CSS_SELECTOR, "#signin button[type='submit']").click()
        card = find(driver, f"[data-request='{r}']", "the inbox after signing in")
        assert driver.find_element(By.CSS_SELECTOR, "#who .key-name").text == "alice"
        assert card.find_elements(By.CSS_SELECTOR, "[data-action='approve']"), "a read-write key sees the buttons"
        find(driver, "#live[data-state='live']", "the stream, with ?token=")
        # Kept for the session: a reload stays signed in.
        driver.refresh()
        find(driver, f"[data-request='{r}']", "the inbox after a reload")
        driver.find_element(By.CSS_SELECTOR, "#who button").click()
        key = find(driver, "#signin input[type='password']", "the sign-in form after signing out")
        key.send_keys(reader)
        driver.find_element(By.CSS_SELECTOR, "#signin button[type='submit']").click()
        card = find(driver, f"[data-request='{r}']", "the inbox for the read-only key")
        assert driver.find_element(By.CSS_SELECTOR, "#who .key-name").text == "bots"
        assert "read-only" in driver.find_element(By.ID, "who").text
        assert not driver.find_elements(By.CSS_SELECTOR, "[data-action]"), "a read-only key sees action buttons"
        find(driver, "#live[data-state='live']", "the read-only key's stream")
        # A worker's key may write, but not answer approvals: no buttons either.
        driver.find_element(By.CSS_SELECTOR, "#who button").click()
        key = find(driver, "#signin input[type='password']", "the sign-in form again")
        key.send_keys(worker)
        driver.find_element(By.CSS_SELECTOR, "#signin button[type='submit']").click()
        card = find(driver, f"[data-request='{r}']", "the inbox for the worker's key")
        assert driver.find_element(By.CSS_SELECTOR, "#who .key-name").text == "crew"
        assert "worker" in driver.find_element(By.ID, "who").text
        assert not driver.find_elements(By.CSS_SELECTOR, "[data-action]"), "a worker's key sees action buttons"
        # The only errors: the refused key's 401s.
        assert not errors(driver, allowed=("401",)), errors(driver, allowed=("401",))
        print("console: asks for a key, names it, and shows no action button to a read-only key or a "
              "worker's key (no reviewer role)")
    finally:
        driver.quit()
        stop([server])


if __name__ == "__main__":
    main()
