"""The tables the project is built from: experiments and datasets discovered from their packages, the articles'
letters mapped to regularizers, and the Student-t interval every report uses."""
import pytest

import manualbp.functional as MF


def test_confidence_interval_uses_student_t():
    from manualbp.experiments.report import mean_ci
    m, sd, half, n = mean_ci([1.0, 2.0, 3.0])
    assert (m, sd, n) == (2.0, 1.0, 3)
    assert half == pytest.approx(4.302652729911275 / 3 ** 0.5)   # t_{2, 0.975} sd / sqrt(3), not 1.96


def test_experiments_and_datasets_come_from_tables():
    from manualbp.data import DATASETS, LOADERS
    from manualbp.experiments import EXPERIMENTS, get_experiment
    assert EXPERIMENTS["zca"] == "manualbp.experiments.zca" and "report" not in EXPERIMENTS
    assert all(hasattr(get_experiment(n), "PRESETS") and hasattr(get_experiment(n), "GRID") for n in EXPERIMENTS)
    assert set(DATASETS) == set(LOADERS) >= {"mnist", "fashion_mnist", "cifar10", "stl10", "penn_fudan", "mall"}


def test_article_letters_map_to_regularizers():
    for article, letters in MF.ARTICLE_LETTERS.items():
        assert letters["Z"] == "none" and set(letters.values()) - {"none"} <= set(MF.REGULARIZERS), article
    assert len(MF.ARTICLE_LETTERS["weights-pov"]) == 13 and len(MF.ARTICLE_LETTERS["gradient-pov"]) == 11


def test_same_function_names_exactly_the_regularizers_that_coincide():
    """SAME_FUNCTION lists every pair of regularizers whose R and R' agree on random weights (zeros, tiny and large
    values included), and no other pair: weights-pov's F and H, gradient-pov's D and F."""
    import itertools

    import torch

    from manualbp.functional.regularizers import SAME_FUNCTION
    g = torch.Generator().manual_seed(0)
    w = torch.cat([torch.randn(500, generator=g, dtype=torch.float64) * 3, torch.tensor([0.0, 1e-9, -1e-9, 50.0]),
                   torch.rand(100, generator=g, dtype=torch.float64) * 1e-3])
    same = set()
    for a, b in itertools.combinations(sorted(MF.REGULARIZERS), 2):
        ra, rb = MF.REGULARIZERS[a], MF.REGULARIZERS[b]
        with torch.no_grad():
            va, vb = ra.value(w), rb.value(w)
            ga, gb = ra.grad(w), rb.grad(w)
        fin = torch.isfinite(va) & torch.isfinite(ga)   # log_sq and the like are undefined at 0: compare elsewhere
        if not torch.equal(fin, torch.isfinite(vb) & torch.isfinite(gb)):
            continue
        if torch.allclose(va[fin], vb[fin], rtol=1e-12, atol=0) and torch.allclose(ga[fin], gb[fin], rtol=1e-12,
                                                                                     atol=0):
            same.add(frozenset((a, b)))
    assert same == {frozenset(p) for p in SAME_FUNCTION.items()}
    letters = MF.ARTICLE_LETTERS
    assert SAME_FUNCTION[letters["weights-pov"]["H"]] == letters["weights-pov"]["F"]
    assert SAME_FUNCTION[letters["gradient-pov"]["F"]] == letters["gradient-pov"]["D"]
