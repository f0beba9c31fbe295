"""The web app in-process: pages, votes, undo, and every refusal the issue asks for."""

from __future__ import annotations

import html
import json

from fastapi.testclient import TestClient

from rlhfkit.data.records import read_preferences
from rlhfkit.label import db
from rlhfkit.label.app import MAX_BODY_BYTES, create_app

ORIGIN = "http://127.0.0.1:8765"  # the in-process client's base URL (conftest)


def vote(client, token, fields, origin=ORIGIN, **extra):
    headers = {"Origin": origin} if origin else {}
    return client.post(f"/a/{token}/vote", data={**fields, **extra}, headers=headers)


def votes_in(project) -> list[db.Vote]:
    con = db.open_project(project)
    try:
        return db.votes(con)
    finally:
        con.close()


def test_annotator_page_escapes_model_text_and_sets_a_strict_csp(client, project, kit):
    people, _ = kit.tokens(project)
    page = client.get(f"/a/{people['ann']}")
    assert page.status_code == 200
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in page.text
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page.text
    assert "<script>document" not in page.text and "<img src=x" not in page.text
    assert "Be &lt;b&gt;fair&lt;/b&gt;." in page.text  # guidelines are text too
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "same-origin"


def test_a_vote_is_stored_once_and_the_next_pair_follows(client, project, kit):
    people, _ = kit.tokens(project)
    first = client.get(f"/a/{people['ann']}").text
    fields = kit.form_of(first)
    answer = vote(client, people["ann"], fields, choice="a")
    assert answer.status_code == 303 and answer.headers["location"] == f"/a/{people['ann']}"
    again = vote(client, people["ann"], fields, choice="b")  # a double submit / retried request
    assert again.status_code == 303
    stored = votes_in(project)
    assert [(v.item_id, v.annotator, v.choice) for v in stored] == [(int(fields["item"]), "ann", "a")]
    following = client.get(f"/a/{people['ann']}").text
    assert kit.form_of(following)["item"] != fields["item"] and "<b id=\"done-count\">1</b> / 6" in following


def test_undo_removes_only_the_annotators_own_last_vote(client, project, kit):
    people, _ = kit.tokens(project)
    ann_fields = kit.form_of(client.get(f"/a/{people['ann']}").text)
    bob_fields = kit.form_of(client.get(f"/a/{people['bob']}").text)
    vote(client, people["ann"], ann_fields, choice="a")
    vote(client, people["bob"], bob_fields, choice="tie")
    undone = client.post(f"/a/{people['bob']}/undo", data={"form_token": bob_fields["form_token"]}, headers={"Origin": ORIGIN})
    assert undone.status_code == 303 and undone.headers["location"].endswith("?undone=1")
    assert [(v.annotator, v.choice) for v in votes_in(project)] == [("ann", "a")]
    shown = client.get(undone.headers["location"]).text
    assert kit.form_of(shown)["item"] == bob_fields["item"] and "was undone" in shown


def test_cross_site_and_tokenless_posts_are_refused(client, project, kit):
    people, _ = kit.tokens(project)
    fields = kit.form_of(client.get(f"/a/{people['ann']}").text)
    assert vote(client, people["ann"], fields, origin="http://evil.example", choice="a").status_code == 403
    assert vote(client, people["ann"], fields, origin=None, choice="a").status_code == 403  # no Origin, no Referer
    referer_ok = client.post(f"/a/{people['ann']}/vote", data={**fields, "choice": "a"},
                             headers={"Referer": f"{ORIGIN}/a/{people['ann']}"})
    assert referer_ok.status_code == 303  # same-origin Referer is accepted when Origin is absent
    undo_fields = {"form_token": fields["form_token"]}
    assert client.post(f"/a/{people['ann']}/undo", data=undo_fields, headers={"Origin": "null"}).status_code == 403
    no_token = vote(client, people["ann"], {"item": fields["item"]}, choice="a")
    assert no_token.status_code == 403 and "form token" in no_token.text
    assert client.post("/a/not-a-token/vote", data=fields, headers={"Origin": ORIGIN}).status_code == 404
    assert [v.annotator for v in votes_in(project)] == ["ann"]  # only the Referer one went through


def test_another_annotators_token_cannot_read_or_change_votes(tmp_path, kit):
    project = kit.make_project(tmp_path, annotators=("ann", "bob"), overlap=1, n=4)  # ann: items 1, 3; bob: 2, 4
    people, _ = kit.tokens(project)
    with TestClient(create_app(project), base_url=ORIGIN, follow_redirects=False) as client:
        ann = kit.form_of(client.get(f"/a/{people['ann']}").text)
        bob = kit.form_of(client.get(f"/a/{people['bob']}").text)
        assert vote(client, people["ann"], ann, choice="a").status_code == 303
        # bob votes on ann's item with his own valid token and form token: refused
        stolen = vote(client, people["bob"], {**bob, "item": ann["item"]}, choice="b")
        assert stolen.status_code == 404 and "not one of your items" in stolen.text
        # ann's form token does not work on bob's link, nor bob's on ann's
        assert vote(client, people["bob"], {**ann, "item": bob["item"]}, choice="b").status_code == 403
        assert client.post(f"/a/{people['ann']}/undo", data={"form_token": bob["form_token"]},
                           headers={"Origin": ORIGIN}).status_code == 403
        # bob's undo has nothing of his to undo, and leaves ann's vote alone
        client.post(f"/a/{people['bob']}/undo", data={"form_token": bob["form_token"]}, headers={"Origin": ORIGIN})
        assert kit.form_of(client.get(f"/a/{people['bob']}").text)["item"] in ("2", "4")  # bob never sees ann's items
    assert [(v.annotator, v.choice) for v in votes_in(project)] == [("ann", "a")]


def test_malformed_forms_get_one_line_not_a_traceback(tmp_path, kit):
    project = kit.make_project(tmp_path, rate=True)
    people, admin = kit.tokens(project)
    with TestClient(create_app(project), base_url=ORIGIN, follow_redirects=False) as client:
        fields = kit.form_of(client.get(f"/a/{people['ann']}").text)
        ratings = {f"{s}_{k}": "4" for s in "ab" for k in db.SCALES}
        cases = [({**fields, **ratings, "choice": "maybe"}, 400, "field 'choice'"),
                 ({**fields, **ratings, "item": "x1", "choice": "a"}, 400, "field 'item'"),
                 ({**fields, **ratings, "item": "999", "choice": "a"}, 404, "not one of your items"),
                 ({**fields, **ratings, "a_helpful": "9", "choice": "a"}, 400, "field 'a_helpful'"),
                 ({**fields, "choice": "a"}, 400, "all three ratings")]
        for data, status, words in cases:
            answer = client.post(f"/a/{people['ann']}/vote", data=data, headers={"Origin": ORIGIN})
            assert answer.status_code == status and words in html.unescape(answer.text) and "Traceback" not in answer.text
        big = client.post(f"/a/{people['ann']}/vote", content=b"x=" + b"a" * MAX_BODY_BYTES,
                          headers={"Origin": ORIGIN, "Content-Type": "application/x-www-form-urlencoded"})
        assert big.status_code == 413
        assert client.get(f"/a/{people['ann']}", headers={"Host": "evil.example"}).status_code == 421  # DNS rebinding
        assert client.get("/admin/wrong").status_code == 404
        ok = client.post(f"/a/{people['ann']}/vote", data={**fields, **ratings, "choice": "a"}, headers={"Origin": ORIGIN})
        assert ok.status_code == 303
        assert votes_in(project)[0].ratings == {key: 4 for key in db.RATING_COLUMNS}


def test_admin_page_and_export(client, project, tmp_path, kit):
    people, admin = kit.tokens(project)
    for name, choice in (("ann", "b"), ("bob", "b")):
        for _ in range(6):
            fields = kit.form_of(client.get(f"/a/{people[name]}").text)
            assert vote(client, people[name], fields, choice=choice).status_code == 303
    page = client.get(f"/admin/{admin}")
    assert page.status_code == 200 and "6 / 6" in page.text and people["ann"] in page.text
    assert "<script>document" not in page.text
    exported = client.get(f"/admin/{admin}/export.jsonl")
    assert exported.status_code == 200
    out = tmp_path / "exported.jsonl"
    out.write_text(exported.text)
    records = read_preferences(out)
    assert len(records) == 6 and all(r.p_chosen == 1.0 for r in records)
    assert {json.loads(line)["origin"]["chosen"] for line in exported.text.splitlines()} == {"ppo"}


def test_bound_to_every_interface_any_host_name_is_served(tmp_path, kit):
    project = kit.make_project(tmp_path)
    people, _ = kit.tokens(project)
    with TestClient(create_app(project, bind_host="0.0.0.0"), base_url="http://labels.lan:8765") as client:
        assert client.get(f"/a/{people['ann']}").status_code == 200
    with TestClient(create_app(project, bind_host="127.0.0.1"), base_url="http://labels.lan:8765") as client:
        assert client.get(f"/a/{people['ann']}").status_code == 421
