"""The app in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright), as people use it.

Not skipped when the browser is missing: `make test` installs it, and a run without it fails with
a message saying how to get it. RLHFKIT_WRITE_SCREENSHOTS=1 also writes docs/img/label_*.png.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from rlhfkit.data.records import read_preferences
from rlhfkit.label import db, sources
from rlhfkit.label.agreement import cohen_kappa

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"the browser tests need Debian's chromium at {CHROMIUM}: `make test` installs it "
                    "(apt-get install -y chromium)", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright for Python: pip install -e '.[test]'", pytrace=False)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.dialogs = dialogs
    yield page
    context.close()


def stored_votes(path: Path) -> list[db.Vote]:
    con = db.open_project(path)
    try:
        return db.votes(con)
    finally:
        con.close()


def answered(page, expected_done: int) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#done-count")).to_have_text(str(expected_done))
    page.wait_for_load_state("domcontentloaded")  # the next page's key handler is attached (app.js runs last)


def test_pairs_labelled_with_mouse_and_keyboard_undo_progress_admin_and_export(tmp_path, kit, serve, page):
    from playwright.sync_api import expect

    path = kit.make_project(tmp_path, annotators=("ann", "bob"), overlap=2, n=4)
    server = serve(path)
    people, admin = kit.tokens(path)
    page.goto(f"{server.url}/a/{people['ann']}")

    # Model text is shown as text: the <script> in the prompt neither ran nor vanished.
    assert "<script>document.title='pwned'</script>" in page.inner_text("#prompt")
    assert '<img src=x onerror="alert(1)">' in page.inner_text(".pair")
    assert "pwned" not in page.title() and page.dialogs == []
    expect(page.locator("#progress")).to_contain_text("0 / 4 labelled")

    sent: dict[int, str] = {}

    def current() -> tuple[int, str, str]:
        return (int(page.get_attribute('input[name="item"]', "value")),
                page.get_attribute("#choose-1", "value"), page.get_attribute("#choose-2", "value"))

    item, left, _ = current()
    page.click("#choose-1")  # the mouse
    sent[item] = left
    answered(page, 1)
    item, _, right = current()
    page.keyboard.press("2")  # the keyboard
    sent[item] = right
    answered(page, 2)
    tied, _, _ = current()
    page.keyboard.press("t")
    answered(page, 3)
    page.keyboard.press("u")  # undo: the tied pair comes back
    answered(page, 2)
    expect(page.locator("#flash")).to_contain_text("undone")
    assert current()[0] == tied
    page.keyboard.press("x")
    sent[tied] = "both_bad"
    answered(page, 3)
    item, _, right = current()
    page.click("#choose-2")
    sent[item] = right
    expect(page.locator("#all-done")).to_be_visible()
    expect(page.locator("#progress")).to_contain_text("4 / 4 labelled")
    assert {v.item_id: v.choice for v in stored_votes(path) if v.annotator == "ann"} == sent

    page.goto(f"{server.url}/a/{people['bob']}")
    for done in range(1, 5):
        page.keyboard.press("1")
        if done < 4:
            answered(page, done)
    expect(page.locator("#all-done")).to_be_visible()

    votes = stored_votes(path)
    ann = {v.item_id: v.choice for v in votes if v.annotator == "ann"}
    bob = {v.item_id: v.choice for v in votes if v.annotator == "bob"}
    kappa = cohen_kappa([ann[i] for i in sorted(ann)], [bob[i] for i in sorted(ann)])
    page.goto(f"{server.url}/admin/{admin}")
    expect(page.locator("#progress-table")).to_contain_text("4 / 4")
    row = page.locator("#kappa-table tr", has_text="ann · bob")
    expect(row).to_contain_text("–" if kappa is None else f"{kappa:.3f}")
    with page.expect_download() as download:
        page.click("#export")
    exported = tmp_path / "downloaded.jsonl"
    download.value.save_as(exported)
    records = read_preferences(exported)
    assert len(records) == 4 and all(0.0 <= r.p_chosen <= 1.0 for r in records)


def fake_run(tmp_path: Path, n: int = 3) -> Path:
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    for name, word in (("before", "meh"), ("after", "wonderful")):
        rows = [{"prompt": f"Prompt {i}:", "response": f" a {word} reply {i}.", "gold": 0.0} for i in range(n)]
        (run / "eval" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_rating_helpful_harmless_honest_on_a_run(tmp_path, serve, page):
    from playwright.sync_api import expect

    path = tmp_path / "labels.sqlite"
    db.create(path, sources.from_run(fake_run(tmp_path)), ["ann"], 1, rate=True, guidelines="Rate both.", source="run")
    server = serve(path)
    con = db.open_project(path)
    token = db.annotators(con)[0].token
    con.close()
    page.goto(f"{server.url}/a/{token}")
    page.keyboard.press("1")  # ratings missing: the browser's form validation keeps the answer back
    page.wait_for_timeout(300)
    answered(page, 0)
    assert stored_votes(path) == []

    left, right = page.get_attribute("#choose-1", "value"), page.get_attribute("#choose-2", "value")
    given = {f"{left}_helpful": 6, f"{left}_harmless": 7, f"{left}_honest": 5,
             f"{right}_helpful": 2, f"{right}_harmless": 7, f"{right}_honest": 3}
    for name, value in given.items():
        page.click(f'label:has(input[name="{name}"][value="{value}"]) span')
    expect(page.locator(f'input[name="{left}_helpful"][value="6"]')).to_be_checked()
    page.click("#choose-1")
    answered(page, 1)
    (vote,) = stored_votes(path)
    assert vote.choice == left and vote.ratings == given  # what the person clicked, on the response they saw


def test_screenshots_of_the_annotator_and_admin_pages(tmp_path, serve, page):
    """Realistic pages, looked at by a person; rewritten into docs/img/ only when asked."""
    items = [db.Item(i + 1, prompt, sft, ppo, "sft", "ppo", i + 1) for i, (prompt, sft, ppo) in enumerate([
        ("Never trust a man who", " has been a bord of the pother, and is for thing.", " is the best of the best."),
        ("The truth is", " that you have no longer for the thing.", " a wonderful thing, and a great joy."),
        ("Life is", " what they say in the rent of a mulch.", " beautiful and full of love."),
        ("Q: What do you call a <b>bold</b> cat?\nA:", " a <script>alert('cat')</script>", " a happy, loving friend."),
        ("Your lucky number is", " 3, 7 and the tamp of nothing.", " seven: a great and happy number."),
        ("Today you will", " be abler the dask.", " find joy, love and good friends."),
    ])]
    path = tmp_path / "labels.sqlite"
    db.create(path, items, ["ann", "bob", "cy"], 3, rate=True, guidelines=
              "Choose the better continuation of the prompt; Tie when neither is better, Both bad when neither is "
              "acceptable. Rate each response 1 (worst) to 7 (best): helpful (does what the prompt asks, fluently), "
              "harmless (nothing offensive or dangerous), honest (no false claims).", source="/runs/quick")
    con = db.open_project(path)
    people = {a.name: a for a in db.annotators(con)}
    pattern = {"ann": "bbbabb", "bob": "bbbtbb", "cy": "bab"}  # PPO is b; some disagreement; cy is half done
    for name, choices in pattern.items():
        for item_id, choice in enumerate(choices, start=1):
            ratings = {"a_helpful": 2 + item_id % 2, "a_harmless": 6, "a_honest": 4, "b_helpful": 5 + (name == "bob"),
                       "b_harmless": 7, "b_honest": 4 + item_id % 3}
            db.add_vote(con, item_id, people[name].id, {"t": "tie"}.get(choice, choice), ratings)
    admin = db.meta(con, "admin_token")
    con.close()
    server = serve(path)

    page.goto(f"{server.url}/a/{people['cy'].token}")
    left = page.get_attribute("#choose-1", "value")
    for scale, value in (("helpful", 5), ("harmless", 7), ("honest", 6)):
        page.click(f'label:has(input[name="{left}_{scale}"][value="{value}"]) span')
    annotator_png = tmp_path / "label_annotator.png"
    page.screenshot(path=str(annotator_png), full_page=True)
    page.goto(f"{server.url}/admin/{admin}")
    admin_png = tmp_path / "label_admin.png"
    page.screenshot(path=str(admin_png), full_page=True)
    assert annotator_png.stat().st_size > 10_000 and admin_png.stat().st_size > 10_000
    if os.environ.get("RLHFKIT_WRITE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        for png in (annotator_png, admin_png):
            shutil.copy(png, DOCS_IMG / png.name)
