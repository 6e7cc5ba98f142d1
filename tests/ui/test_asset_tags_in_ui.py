"""The residency tags are visible and filterable in the Dagster UI, checked in a real browser.

Starts ``dagster dev`` on loopback with the clinical example and drives Debian's Chromium headless through
Playwright (``executable_path``; no browser download). Skipped when either is missing: enable it with
``apt-get install chromium`` and ``pip install playwright`` (never ``playwright install``).

The lineage graph's nodes show the plane and jurisdiction as kinds (Dagster 1.13 draws ``kinds`` in each
node's footer, the default "Kind tag" facet); that is checked over GraphQL in
``tests/examples/test_dagster_dev.py``, not yet in a browser here.
"""

from __future__ import annotations

import contextlib
import shutil
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.dagster_dev import DagsterUi, running_dagster_dev

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

pytestmark = pytest.mark.timeout(300)

ENABLE = (
    "a real-browser UI test: needs Debian Chromium and Playwright "
    "(`apt-get install chromium` and `pip install playwright`; never `playwright install`)"
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-dev-shm-usage",
]
# The first page load fetches a large JS bundle and the code location's data on 2 shared cores: be generous.
UI_TIMEOUT_MS = 60_000
RESTRICTED = [
    "clinical/patients",
    "clinical/encounters",
    "clinical/lab_results",
    "features/eu_lab_features",
    "us/claims",
]
NOT_RESTRICTED = ["us/claims_by_ward", "analytics/group_ward_benchmark", "analytics/eu_ward_occupancy"]


@pytest.fixture(scope="module")
def chromium_executable() -> str:
    pytest.importorskip("playwright.sync_api", reason=f"playwright is not installed: {ENABLE}")
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip(f"no `chromium` on PATH: {ENABLE}")
    return executable


@pytest.fixture(scope="module")
def browser(chromium_executable: str) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def dagster_ui(chromium_executable: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterUi]:
    with running_dagster_dev(tmp_path_factory.mktemp("dagster_home")) as ui:
        yield ui


@pytest.fixture
def page(browser: Browser, tmp_path: Path) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    try:
        yield page
    finally:
        with contextlib.suppress(Exception):  # the state at the end, also when a test failed
            page.screenshot(path=str(tmp_path / "last.png"))
        context.close()


def open_ui(page: Page, ui: DagsterUi, path: str) -> None:
    """Go to ``path`` and dismiss the "Join the Dagster community" dialog when this instance shows it."""
    from playwright.sync_api import expect

    page.goto(f"{ui.url}{path}")
    # The dialog shows on loopback origins, about a second after the UI asked the server `shouldShowNux`;
    # its Skip button records the answer in $DAGSTER_HOME/.nux, so it shows once per fresh DAGSTER_HOME.
    if ui.graphql("{ shouldShowNux }").get("data", {}).get("shouldShowNux"):
        dialog = page.get_by_role("dialog").filter(has_text="Join the Dagster community")
        skip = dialog.get_by_role("button", name="Skip", exact=True)
        expect(skip).to_be_visible(timeout=UI_TIMEOUT_MS)
        skip.click()
        expect(dialog).to_be_hidden()


def asset_link(page: Page, key: str) -> Locator:
    return page.locator(f'a[href="/assets/{key}"]')


def test_asset_page_shows_residency_tags_and_kinds(page: Page, dagster_ui: DagsterUi, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    open_ui(page, dagster_ui, "/assets/clinical/patients")
    expect(page.get_by_text("Patient master data (PHI).", exact=True)).to_be_visible(timeout=UI_TIMEOUT_MS)
    # Tags render as "key: value" chips in the Definition panel.
    expect(page.get_by_text("hybrid/plane: eu-onprem", exact=True)).to_be_visible()
    expect(page.get_by_text("hybrid/classification: restricted", exact=True)).to_be_visible()
    # Kinds render as a labelled icon beside the kind's display name.
    for icon, label in [("postgres", "Postgres"), ("iceberg", "Iceberg")]:
        expect(page.get_by_role("img", name=icon, exact=True)).to_be_visible()
        expect(page.get_by_text(label, exact=True)).to_be_visible()
    page.screenshot(path=str(tmp_path / "asset_page.png"))


def test_catalog_filters_assets_by_classification_tag(
    page: Page, dagster_ui: DagsterUi, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    # Unfiltered, the catalog lists every asset: the filter below is what removes the others.
    open_ui(page, dagster_ui, "/assets")
    for key in RESTRICTED + NOT_RESTRICTED:
        expect(asset_link(page, key)).to_be_visible(timeout=UI_TIMEOUT_MS)
    page.screenshot(path=str(tmp_path / "catalog_all.png"))

    # Dagster 1.13 keeps the catalog's asset selection (selection syntax) in the `asset-selection` query
    # parameter; this is the URL a user gets after typing the filter into the catalog's search box.
    selection = 'tag:"hybrid/classification"="restricted"'
    open_ui(page, dagster_ui, "/assets?" + urllib.parse.urlencode({"asset-selection": selection}))
    expect(page.get_by_text(selection, exact=True)).to_be_visible(timeout=UI_TIMEOUT_MS)
    for key in RESTRICTED:
        expect(asset_link(page, key)).to_be_visible(timeout=UI_TIMEOUT_MS)
    for key in NOT_RESTRICTED:
        expect(asset_link(page, key)).to_have_count(0)
    page.screenshot(path=str(tmp_path / "catalog_restricted.png"))
