"""A real uvicorn on 127.0.0.1: many annotators at once, and kill -9 in the middle — every vote once."""

from __future__ import annotations

import threading
from collections import Counter

import httpx

from rlhfkit.label import db

N_ANNOTATORS, N_ITEMS = 8, 50
CHOICES = ("a", "b", "tie", "both_bad")


def choice_for(item: int, name: str) -> str:
    return CHOICES[(item + len(name)) % len(CHOICES)]


def label_all(url: str, token: str, name: str, acknowledged: list) -> None:
    """One annotator labelling as a browser would: GET the page, POST the answer; every 10th answer is
    sent twice (a double click / a retry). Appends (item, choice) once the server answered 303."""
    with httpx.Client(base_url=url, headers={"Origin": url}, timeout=60) as client:
        while True:
            page = client.get(f"/a/{token}")
            if 'id="all-done"' in page.text:
                return
            fields = form_of_page(page.text)
            item = int(fields["item"])
            data = {**fields, "choice": choice_for(item, name)}
            for _ in range(2 if item % 10 == 0 else 1):
                answer = client.post(f"/a/{token}/vote", data=data)
                assert answer.status_code == 303, answer.text
            acknowledged.append((item, data["choice"]))


def form_of_page(html: str) -> dict[str, str]:
    import re

    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', html)[:2])


def stored(path) -> Counter:
    con = db.open_project(path)
    try:
        return Counter((v.annotator, v.item_id, v.choice) for v in db.votes(con))
    finally:
        con.close()


def project(tmp_path, kit):
    names = [f"annotator{i}" for i in range(N_ANNOTATORS)]
    path = tmp_path / "labels.sqlite"
    db.create(path, kit.sample_items(N_ITEMS), names, N_ANNOTATORS, rate=False, guidelines="", source="test")
    return path, kit.tokens(path)[0]


def run_threads(url, tokens, acknowledged):
    errors = []

    def work(name):
        try:
            label_all(url, tokens[name], name, acknowledged[name])
        except (httpx.HTTPError, AssertionError) as err:  # the server was killed under us
            errors.append(err)

    threads = [threading.Thread(target=work, args=(name,)) for name in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return errors


def test_eight_annotators_fifty_votes_each_at_once_every_vote_stored_once(tmp_path, kit, serve):
    path, tokens = project(tmp_path, kit)
    server = serve(path)
    acknowledged = {name: [] for name in tokens}
    assert run_threads(server.url, tokens, acknowledged) == []
    votes = stored(path)
    assert sum(votes.values()) == N_ANNOTATORS * N_ITEMS and set(votes.values()) == {1}  # no vote twice
    expected = Counter((name, item, choice) for name, acks in acknowledged.items() for item, choice in acks)
    assert votes == expected  # every acknowledged vote, with the choice that was sent
    assert all(len({i for i, _ in acks}) == N_ITEMS for acks in acknowledged.values())


def test_kill_9_mid_stream_then_restart_loses_nothing(tmp_path, kit, serve):
    path, tokens = project(tmp_path, kit)
    server = serve(path)
    acknowledged = {name: [] for name in tokens}
    def kill_when_busy():
        while sum(len(a) for a in acknowledged.values()) < 60:
            threading.Event().wait(0.01)
        server.kill9()  # SIGKILL: no shutdown handler, no flush, mid-request for some clients

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    errors = run_threads(server.url, tokens, acknowledged)
    killer.join()
    assert errors, "the clients should have seen the server die"
    before_restart = stored(path)
    acked = Counter((name, item, choice) for name, acks in acknowledged.items() for item, choice in acks)
    assert acked - before_restart == Counter()  # every acknowledged vote survived kill -9
    assert set(before_restart.values()) == {1}
    assert sum(before_restart.values()) - sum(acked.values()) <= N_ANNOTATORS  # at most the ones in flight

    server.start()  # same file, same port: the annotators just reload their pages
    for name in tokens:
        acknowledged[name] += [(item, choice) for who, item, choice in before_restart if who == name
                               and (item, choice) not in acknowledged[name]]
    assert run_threads(server.url, tokens, acknowledged) == []
    votes = stored(path)
    assert sum(votes.values()) == N_ANNOTATORS * N_ITEMS and set(votes.values()) == {1}
