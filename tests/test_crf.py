"""The CRF layer against brute-force enumeration of every tag sequence on tiny cases."""

from __future__ import annotations

import itertools

import pytest
import torch

from workbench.tasks.crf import CRF, FORBIDDEN, transition_constraints
from workbench.tasks.tags import tag_list


def path_score(crf: CRF, emissions: torch.Tensor, path: tuple[int, ...]) -> torch.Tensor:
    """score(y) written out directly from the definition (one unmasked sequence (L, T))."""
    trans, start, end = crf._scores()
    s = start[path[0]] + end[path[-1]]
    for i, tag in enumerate(path):
        s = s + emissions[i, tag]
        if i:
            s = s + trans[path[i - 1], tag]
    return s


def brute_force(crf: CRF, emissions: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(log Z, best path) over all T^L sequences."""
    paths = list(itertools.product(range(crf.num_tags), repeat=emissions.size(0)))
    scores = torch.stack([path_score(crf, emissions, p) for p in paths])
    return torch.logsumexp(scores, 0), paths[int(scores.argmax())]


def random_crf(num_tags: int, seed: int, constraints=None) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(num_tags, constraints)
    with torch.no_grad():  # larger than the init so the test is not dominated by emissions
        for p in crf.parameters():
            p.normal_()
    return crf


@pytest.mark.parametrize("seed", range(6))
def test_nll_and_viterbi_equal_brute_force(seed):
    crf = random_crf(3, seed)
    torch.manual_seed(100 + seed)
    lengths = [4, 1, 3, 2]
    emissions = torch.randn(len(lengths), 4, 3)
    mask = torch.arange(4)[None, :] < torch.tensor(lengths)[:, None]
    tags = torch.randint(0, 3, (len(lengths), 4))
    nll = crf(emissions, tags, mask, reduction="none")
    paths = crf.decode(emissions, mask)
    for b, n in enumerate(lengths):
        log_z, best = brute_force(crf, emissions[b, :n])
        gold = path_score(crf, emissions[b, :n], tuple(tags[b, :n].tolist()))
        assert nll[b].item() == pytest.approx((log_z - gold).item(), abs=1e-4)
        assert tuple(paths[b]) == best
    assert crf(emissions, tags, mask).item() == pytest.approx(nll.mean().item(), abs=1e-5)
    assert crf(emissions, tags, mask, reduction="token_mean").item() == pytest.approx(nll.sum().item() / sum(lengths), abs=1e-5)


def test_probabilities_sum_to_one():
    crf = random_crf(3, 7)
    emissions = torch.randn(1, 3, 3)
    paths = torch.tensor(list(itertools.product(range(3), repeat=3)))  # (27, 3)
    nll = crf(emissions.expand(len(paths), -1, -1), paths, reduction="none")
    assert torch.exp(-nll).sum().item() == pytest.approx(1.0, abs=1e-5)


def test_masked_positions_are_ignored_wherever_they_are():
    crf = random_crf(4, 3)
    torch.manual_seed(0)
    emissions = torch.randn(2, 6, 4)
    tags = torch.randint(0, 4, (2, 6))
    # [CLS] at 0, a non-first word piece at 3, padding at the end: all left out.
    mask = torch.tensor([[0, 1, 1, 0, 1, 0], [0, 1, 1, 1, 1, 1]], dtype=torch.bool)
    nll = crf(emissions, tags, mask, reduction="none")
    paths = crf.decode(emissions, mask)
    for b in range(2):
        kept = mask[b].nonzero().squeeze(1)
        alone = crf(emissions[b : b + 1, kept], tags[b : b + 1, kept], reduction="none")
        assert nll[b].item() == pytest.approx(alone.item(), abs=1e-5)
        assert paths[b] == crf.decode(emissions[b : b + 1, kept])[0]
    # Changing anything at masked positions (including ignore-index labels) changes nothing.
    noisy_em, noisy_tags = emissions.clone(), tags.clone()
    noisy_em[~mask] = 1000.0
    noisy_tags[~mask] = -100
    assert torch.allclose(crf(noisy_em, noisy_tags, mask, reduction="none"), nll)
    assert crf.decode(noisy_em, mask) == paths
    # A sequence with nothing kept: loss 0, empty path.
    empty = torch.zeros(1, 6, dtype=torch.bool)
    assert crf(emissions[:1], tags[:1], empty).item() == 0.0 and crf.decode(emissions[:1], empty) == [[]]


def test_constraints_from_tag_lists():
    bio = tag_list(["LOC", "PER"], "bio")  # O B-LOC I-LOC B-PER I-PER
    allowed, start, end = transition_constraints(bio)
    ix = {t: i for i, t in enumerate(bio)}
    assert not allowed[ix["O"], ix["I-LOC"]] and not allowed[ix["B-PER"], ix["I-LOC"]]
    assert allowed[ix["B-LOC"], ix["I-LOC"]] and allowed[ix["I-LOC"], ix["I-LOC"]] and allowed[ix["I-LOC"], ix["B-PER"]]
    assert start.tolist() == [True, True, False, True, False] and end.all()
    bioes = tag_list(["PER"], "bioes")  # O B I E S
    allowed, start, end = transition_constraints(bioes)
    assert allowed.int().tolist() == [
        [1, 1, 0, 0, 1],  # after O: O, B, S
        [0, 0, 1, 1, 0],  # after B: I, E
        [0, 0, 1, 1, 0],  # after I: I, E
        [1, 1, 0, 0, 1],  # after E: O, B, S
        [1, 1, 0, 0, 1],  # after S: O, B, S
    ]
    assert start.tolist() == [True, True, False, False, True] and end.tolist() == [True, False, False, True, True]


@pytest.mark.parametrize("scheme", ["bio", "bioes"])
def test_constrained_decode_is_the_best_valid_path(scheme):
    tags = tag_list(["PER"], scheme)
    allowed, start, end = transition_constraints(tags)
    for seed in range(5):
        crf = random_crf(len(tags), seed, (allowed, start, end))
        emissions = torch.randn(1, 4, len(tags)) * 3
        (path,) = crf.decode(emissions)
        valid = [p for p in itertools.product(range(len(tags)), repeat=4)
                 if start[p[0]] and end[p[-1]] and all(allowed[a, b] for a, b in itertools.pairwise(p))]
        scores = torch.stack([path_score(crf, emissions[0], p) for p in valid])
        assert tuple(path) == valid[int(scores.argmax())]
        # log Z counts the forbidden paths with weight ~exp(-10000): the same as over valid ones.
        log_z = crf(emissions, torch.tensor([path]), reduction="none") + path_score(crf, emissions[0], tuple(path))
        assert log_z.item() == pytest.approx(torch.logsumexp(scores, 0).item(), abs=1e-4)
    # A forbidden gold sequence (O → I-PER) is possible but costs about 10000.
    bad = torch.tensor([[0, 2, 2, 0]])
    assert crf(emissions, bad).item() > -FORBIDDEN / 2


def test_gradients_flow_and_training_fits():
    torch.manual_seed(0)
    tags = tag_list(["PER", "LOC"], "bio")
    crf = CRF.for_tags(tags)
    emissions = torch.randn(3, 5, len(tags), requires_grad=True)
    gold = torch.tensor([[1, 2, 0, 3, 4], [0, 0, 1, 2, 2], [3, 4, 4, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    loss = crf(emissions, gold, mask)
    loss.backward()
    assert emissions.grad.abs().sum() > 0 and emissions.grad[2, 3:].abs().sum() == 0  # masked: no gradient
    assert crf.transitions.grad.abs().sum() > 0 and crf.start_scores.grad.abs().sum() > 0
    assert crf.transitions.grad[~crf.allowed].abs().sum() == 0  # pinned entries do not learn

    # A few steps of Adam on free emissions fit the gold paths exactly.
    opt = torch.optim.Adam([emissions, *crf.parameters()], lr=0.1)
    first = None
    for _ in range(60):
        opt.zero_grad()
        loss = crf(emissions, gold, mask)
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
    assert loss.item() < first / 10
    assert crf.decode(emissions, mask) == [[1, 2, 0, 3, 4], [0, 0, 1, 2, 2], [3, 4, 4]]


def test_shape_errors():
    crf = CRF(3)
    with pytest.raises(ValueError, match=r"\(batch, length, 3\)"):
        crf.decode(torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="reduction"):
        crf(torch.randn(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), reduction="avg")
    with pytest.raises(ValueError, match="constraints"):
        CRF(3, (torch.ones(2, 2, dtype=torch.bool), torch.ones(3, dtype=torch.bool), torch.ones(3, dtype=torch.bool)))
