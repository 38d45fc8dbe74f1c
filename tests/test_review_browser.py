"""The review page in a real browser (Playwright driving Debian's chromium): the edits of
the issue's scenario, Accept and its run, the catalogue matching the page; two editors at
once; another tenant's session. One seeded batch for the session (tests/review_stack.py)."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import boto3
import pandas as pd
import pytest

from tests.review_stack import BATCH, TENANT, ReviewStack

pytestmark = pytest.mark.integration

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
#: Set to a path (e.g. docs/review-batch.png) to save the README's screenshot.
SCREENSHOT = os.environ.get("REVIEW_SCREENSHOT")


@pytest.fixture(scope="session")
def browser() -> Iterator:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found: ./dev test installs Debian's chromium package")
    with playwright_api.sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def open_batch(browser, stack: ReviewStack, token: str, who: str = "ana", path: str = ""):
    path = path or stack.batch_path
    context = browser.new_context(base_url=stack.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(f"/login?next={path}")
    page.fill("input[name=who]", who)
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"**{path}*")
    return page


def shown_groups(page) -> dict[str, dict]:
    """group id -> name and files, as the page shows them."""
    return page.eval_on_selector_all(
        ".group",
        """els => Object.fromEntries(els.map(g => [
        g.dataset.group,
        {name: g.querySelector('.group-name').textContent.trim(),
         files: [...g.querySelectorAll('.photo')].map(p => p.dataset.file).sort()}]))""",
    )


def group_of(page, file: str) -> str:
    return page.locator(f'.group:has(.photo[data-file="{file}"])').get_attribute("data-group")


def card(page, file: str):
    return page.locator(f'.group:has(.photo[data-file="{file}"])')


def expect_recorded(page, op: str) -> None:
    playwright_api.expect(page.locator("#message")).to_have_text(
        f"{op} recorded. Accept publishes it to the catalogue."
    )


def catalog_table(stack: ReviewStack) -> pd.DataFrame:
    client = boto3.client(
        "s3", endpoint_url=stack.env["S3_ENDPOINT_URL"],
        aws_access_key_id=stack.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack.env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
    )  # fmt: skip
    key = f"tables/catalog/{TENANT}/{BATCH}.parquet"
    body = client.get_object(Bucket=stack.env["PIPELINE_BUCKET"], Key=key)["Body"].read()
    return pd.read_parquet(io.BytesIO(body))


def test_review_edit_undo_accept_and_the_catalogue_shows_the_page(browser, review_stack):
    page = open_batch(browser, review_stack, review_stack.token)
    files = page.eval_on_selector_all(".photo", "els => els.map(e => e.dataset.file)")
    assert sorted(files) == review_stack.accepted  # every accepted file, each once
    assert page.locator(".rejected").get_by_text("notes.txt").count() == 1
    thumb = page.locator('.photo[data-file="coffee.jpg"] img')
    thumb.scroll_into_view_if_needed()
    page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=thumb.element_handle())

    coffee = card(page, "coffee.jpg")
    coffee.locator(".rename-input").fill("Espresso cup")
    coffee.locator("button.rename").click()
    expect_recorded(page, "rename")
    assert card(page, "coffee.jpg").locator(".group-name").text_content() == "Espresso cup"

    card(page, "coffee.jpg").locator('.photo[data-file="coffee-flipped.jpg"] input').check()
    card(page, "coffee.jpg").locator("button.split").click()
    expect_recorded(page, "split")
    assert group_of(page, "coffee-flipped.jpg") != group_of(page, "coffee.jpg")

    card(page, "astronaut.jpg").locator(".pick-group").check()
    card(page, "chelsea.jpg").locator(".pick-group").check()
    page.click("#merge")
    expect_recorded(page, "merge")
    assert group_of(page, "chelsea.jpg") == group_of(page, "astronaut.jpg")

    card(page, "rocket.jpg").locator('.photo[data-file="rocket.jpg"] input').check()
    card(page, "coffee.jpg").locator("button.move").click()
    expect_recorded(page, "move")
    assert group_of(page, "rocket.jpg") == group_of(page, "coffee.jpg")

    page.click("#undo")
    expect_recorded(page, "undo")
    assert group_of(page, "rocket.jpg") == group_of(page, "rocket-recompressed.jpg")
    assert group_of(page, "rocket.jpg") != group_of(page, "coffee.jpg")
    shown = shown_groups(page)
    if SCREENSHOT:
        Path(SCREENSHOT).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOT, full_page=True)

    page.click("#accept")
    run = page.locator("#run")
    playwright_api.expect(run).to_have_attribute("data-status", "SUCCESS", timeout=300_000)
    assert "3/3 assets" in run.text_content()

    catalog = catalog_table(review_stack)
    published = {
        row.group_id: sorted(m["file"] for m in row.member_renditions)
        for row in catalog.itertuples()
    }
    assert published == {g: v["files"] for g, v in shown.items()}
    names = dict(zip(catalog.group_id, catalog.name, strict=True))
    assert names[group_of(page, "coffee.jpg")] == "Espresso cup"
    page.reload()
    assert page.locator("#state").text_content() == "materialised"
    page.context.close()


def test_two_editors_one_gets_the_conflict_and_no_edit_is_lost(browser, review_stack):
    first = open_batch(browser, review_stack, review_stack.token, who="ana")
    second = open_batch(browser, review_stack, review_stack.token, who="bo")
    card(first, "chelsea.jpg").locator(".rename-input").fill("Cat and astronaut")
    card(first, "chelsea.jpg").locator("button.rename").click()
    expect_recorded(first, "rename")

    # The second editor's page predates that edit: refused, with the current groups shown.
    card(second, "rocket.jpg").locator(".rename-input").fill("Rocket")
    card(second, "rocket.jpg").locator("button.rename").click()
    playwright_api.expect(second.locator("#message")).to_contain_text(
        "someone else changed the groups"
    )
    assert card(second, "chelsea.jpg").locator(".group-name").text_content() == (
        "Cat and astronaut"
    )
    # Made again on the current state, it is recorded next to the first one's.
    card(second, "rocket.jpg").locator(".rename-input").fill("Rocket")
    card(second, "rocket.jpg").locator("button.rename").click()
    expect_recorded(second, "rename")
    first.reload()
    assert card(first, "rocket.jpg").locator(".group-name").text_content() == "Rocket"
    assert card(first, "chelsea.jpg").locator(".group-name").text_content() == ("Cat and astronaut")
    for page in (first, second):
        page.context.close()


def test_another_tenants_session_sees_none_of_this_batch(browser, review_stack):
    context = browser.new_context(base_url=review_stack.url)
    page = context.new_page()
    page.goto("/login")
    page.fill("input[name=token]", review_stack.other_token)
    page.click("button[type=submit]")
    page.wait_for_url("**/")
    assert page.locator(f'[data-tenant="{TENANT}"]').count() == 0
    for path in (f"/t/{TENANT}", review_stack.batch_path,
                 f"{review_stack.batch_path}/thumb/coffee.jpg"):  # fmt: skip
        response = page.goto(path)
        assert response.status == 403, path
        assert "may not read tenant" in page.content()
    context.close()


def test_run_status_is_json(browser, review_stack):
    """The endpoint the page polls answers JSON, 404 for a run that is not this batch's."""
    bearer = {"Authorization": f"Bearer {review_stack.token}"}
    context = browser.new_context(base_url=review_stack.url, extra_http_headers=bearer)
    response = context.request.get(f"{review_stack.batch_path}/runs/not-a-run")
    assert response.status == 404 and "no run" in response.text()
    context.close()


def test_products_the_look_cannot_decide_are_marked_for_people(browser, review_stack):
    """The box at 0 degrees looks as much like its own shot at 40 degrees as like the
    artwork variant at 40 kept apart from it: the machine leaves the products apart and the
    page says which photos a person should look at. The sample batch has none."""
    page = open_batch(browser, review_stack, review_stack.token, path=review_stack.undecided_path)
    assert page.text_content("#undecided-count").strip().endswith("undecided")
    cards = page.eval_on_selector_all(
        ".product",
        """els => els.map(p => ({id: p.dataset.product,
            files: [...p.querySelectorAll('.photo')].map(f => f.dataset.file),
            undecided: [...p.querySelectorAll('p.undecided')].map(u => u.textContent)}))""",
    )
    product_of = {f: c["id"] for c in cards for f in c["files"]}
    box = next(c for c in cards if "box-0.jpg" in c["files"])
    assert box["undecided"], "the box's card names no undecided product"
    named = " ".join(box["undecided"])
    assert f"product {product_of['box-40.jpg']} (box-40.jpg)" in named
    assert product_of["box-40.jpg"] != box["id"]
    page.context.close()

    sample = open_batch(browser, review_stack, review_stack.token)
    assert sample.locator("#undecided-count").count() == 0
    assert sample.locator("p.undecided").count() == 0
    sample.context.close()
