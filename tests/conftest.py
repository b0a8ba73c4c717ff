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

CHILD_REPORTS = "MASKRCNN_TEST_CHILD_REPORTS"  # set in a child: the file it writes its reports to
_child_reports: dict[str, list[TestReport]] = {}  # node id -> its reports from the child, until replayed


class _ChildReportWriter:
    """In a child: each report, serialised by pytest's own hook, one JSON line per report."""

    def __init__(self, config, path: str):
        self.config, self.path = config, path

    def pytest_runtest_logreport(self, report):
        data = self.config.hook.pytest_report_to_serializable(config=self.config, report=report)
        with open(self.path, "a") as file:
            file.write(json.dumps(data) + "\n")


def pytest_configure(config):
    if os.environ.get(CHILD_REPORTS):
        config.pluginmanager.register(_ChildReportWriter(config, os.environ[CHILD_REPORTS]))


def _run_child(item) -> None:
    """Run every selected own_process test of item's file in one child pytest; keep their reports by node id.
    A test the child did not finish (it crashed) gets one failed report holding the child's output."""
    same_file = [other for other in item.session.items
                 if other.path == item.path and other.get_closest_marker("own_process")]
    config = item.config
    fd, path = tempfile.mkstemp(suffix=".jsonl")
    os.close(fd)
    try:
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                                 *(other.nodeid for other in same_file)],
                                env={**os.environ, CHILD_REPORTS: path}, cwd=config.rootpath,
                                capture_output=True, text=True)
        with open(path) as file:
            for line in file:
                report = config.hook.pytest_report_from_serializable(config=config, data=json.loads(line))
                if report.skipped and isinstance(report.longrepr, list):
                    report.longrepr = tuple(report.longrepr)  # (path, line, reason): JSON made the tuple a list
                _child_reports.setdefault(report.nodeid, []).append(report)
    finally:
        os.unlink(path)
    for other in same_file:
        reports = _child_reports.get(other.nodeid, [])
        if not any(report.when == "call" or not report.passed for report in reports):
            _child_reports[other.nodeid] = [TestReport(
                other.nodeid, other.location, {}, "failed",
                f"the child pytest ended with exit code {result.returncode} before this test finished; its "
                f"output:\n{(result.stdout + result.stderr)[-6000:]}", "call")]


def pytest_runtest_protocol(item, nextitem):
    if os.environ.get(CHILD_REPORTS) or item.get_closest_marker("own_process") is None:
        return None
    if item.nodeid not in _child_reports:
        _run_child(item)
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for report in _child_reports.pop(item.nodeid):
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True
