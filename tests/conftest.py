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
