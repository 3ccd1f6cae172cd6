"""The PRM head: L2-regularised logistic regression with the strength chosen by grouped cross-validation."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from adaptivestep.prm.data import roc_auc
from adaptivestep.prm.head import L2_GRID, fit_head, group_folds


def test_fit_head_separates_toy_features() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16)).astype(np.float32) * 5 + 3
    y = (x[:, 3] + 0.5 * x[:, 7] > 4.5).astype(np.float32)
    groups = [str(i // 4) for i in range(300)]
    fit = fit_head(x[:300], y[:300], groups)
    assert np.isfinite(fit.w).all() and np.isfinite(fit.b)
    assert roc_auc(x[300:] @ fit.w + fit.b, y[300:]) > 0.95
    # separable data: cross-validation keeps the penalty weak
    assert fit.l2 <= 0.03, fit.cv


def test_fit_head_regularises_noise_instead_of_memorising() -> None:
    # 60 rows, 200 features of pure noise: an unregularised fit memorises (train BCE -> 0)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 200))
    y = (rng.random(60) < 0.3).astype(np.float64)
    groups = [str(i // 3) for i in range(60)]
    weak = fit_head(x, y, groups, l2=1e-4)
    cv = fit_head(x, y, groups)
    assert weak.train_loss < 0.05  # memorised
    assert cv.l2 >= 0.3, cv.cv  # cross-validation chose a strong penalty
    assert cv.train_loss > 0.4  # and does not memorise
    held = rng.normal(size=(500, 200))
    assert np.abs(held @ cv.w + cv.b - np.log(0.3 / 0.7)).max() < 1.5  # predictions stay near the base rate


def test_fit_head_soft_targets_and_degenerate_inputs() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 4))
    p = 1 / (1 + np.exp(-(2 * x[:, 0] - 1)))
    fit = fit_head(x, p, [str(i) for i in range(200)])  # soft targets: recover the generating weights
    assert abs(fit.w[0] - 2) < 0.3 and abs(fit.b + 1) < 0.3 and np.abs(fit.w[1:]).max() < 0.3
    one = fit_head(x, np.ones(200), None)  # one label value: no CV, the strongest penalty, finite
    assert np.isfinite(one.w).all() and one.l2 == max(L2_GRID) and one.cv == {}
    with pytest.raises(ValueError):
        fit_head(np.zeros((0, 4)), np.zeros(0))


def test_group_folds_keep_groups_whole() -> None:
    groups = [f"q{i % 13}" for i in range(100)]
    folds = group_folds(groups, 5, seed=3)
    assert sorted(int(i) for f in folds for i in f) == list(range(100))
    seen = [{groups[i] for i in f} for f in folds]
    assert all(not (a & b) for i, a in enumerate(seen) for b in seen[i + 1:])
