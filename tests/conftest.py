import torch

# The suite runs on a shared 2-core machine: one intra-op thread per test process keeps runs predictable.
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


# ---------------------------------------------------------------------------------------------- browser
import shutil  # noqa: E402

import pytest  # noqa: E402

BROWSER_SETUP = "run scripts/setup-tests.sh (installs Chromium with apt and the playwright package)"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium driven by Playwright (never a downloaded browser); a missing one fails the
    test with the command that installs it, it never skips."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"the browser tests need the playwright package: {BROWSER_SETUP}")
    if not shutil.which(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: {BROWSER_SETUP}")
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


# ------------------------------------------------------------------------------------------ own process
# Tests marked `own_process` run in a child pytest (one per test file, for the marked tests that were
# selected), and their reports are replayed here. OpenVINO and onnxruntime loaded into one process that also
# runs the rest of the suite corrupted its heap on an AMD EPYC (a segfault several tests later); in a child,
# a crash fails the marked tests with the child's output instead of ending the whole run.
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

from _pytest.reports import TestReport  # noqa: E402

CHILD_REPORTS = "MASKRCNN_TEST_CHILD_REPORTS"
_child_reports: dict[str, list[dict]] = {}


def pytest_runtest_logreport(report):
    """In a child: write each report where the parent reads it."""
    path = os.environ.get(CHILD_REPORTS)
    if path:
        with open(path, "a") as file:
            file.write(json.dumps(report._to_json()) + "\n")


def _run_child(item) -> None:
    """Run every selected own_process test of item's file in one child pytest; keep their reports by node id."""
    same_file = [other.nodeid for other in item.session.items
                 if other.path == item.path and other.get_closest_marker("own_process")]
    fd, path = tempfile.mkstemp(suffix=".jsonl")
    os.close(fd)
    try:
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                                 *same_file], env={**os.environ, CHILD_REPORTS: path}, cwd=item.config.rootpath,
                                capture_output=True, text=True)
        with open(path) as file:
            for line in file:
                data = json.loads(line)
                _child_reports.setdefault(data["nodeid"], []).append(data)
    finally:
        os.unlink(path)
    for nodeid in same_file:
        if not any(data["when"] == "call" or data["outcome"] != "passed" for data in _child_reports.get(nodeid, [])):
            _child_reports[nodeid] = [{"crashed": True, "returncode": result.returncode,
                                       "output": (result.stdout + result.stderr)[-6000:]}]


def pytest_runtest_protocol(item, nextitem):
    if os.environ.get(CHILD_REPORTS) or item.get_closest_marker("own_process") is None:
        return None
    if item.nodeid not in _child_reports:
        _run_child(item)
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for data in _child_reports.pop(item.nodeid):
        if data.get("crashed"):
            report = TestReport(item.nodeid, item.location, {}, "failed",
                                f"the child pytest ended with exit code {data['returncode']} before this test "
                                f"finished; its output:\n{data['output']}", "call")
        else:
            report = TestReport._from_json(data)
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True
