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
