"""The PRM's step head on frozen features: L2-regularised logistic regression on float (soft) targets,
with the regularisation strength chosen by grouped cross-validation.

Why not plain gradient descent for N epochs: with a few hundred labelled steps and H = 576..896 features an
unregularised head memorises (train BCE -> 0, held-out AUC at chance). Here the objective is

    mean_i [ BCE(sigmoid(z_i . w + b), y_i) ] + (l2 / 2) * ||w||^2          (z = standardised features)

solved to convergence with L-BFGS (convex, so deterministic up to float rounding), and ``l2`` is picked from
a log grid by K-fold cross-validation over *groups* (a question's steps never sit on both sides of a fold),
scoring held-out step AUC (:func:`choose_strength` says why not BCE). Soft labels enter the BCE directly (no
rounding, no duplication trick needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .data import roc_auc

L2_GRID: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)
"""Candidate strengths (on standardised features, per-example mean loss)."""


@dataclass
class HeadFit:
    """A fitted head on raw features: ``logit = x @ w + b``.

    l2: the strength used. cv: pooled held-out step AUC per candidate strength (empty when not cross-validated).
    train_loss: the objective's BCE part on the training data at the solution.
    """

    w: np.ndarray
    b: float
    l2: float
    cv: dict[float, float] = field(default_factory=dict)
    train_loss: float = float("nan")


def _solve(z: torch.Tensor, y: torch.Tensor, l2: float, init: tuple[torch.Tensor, torch.Tensor] | None = None,
           max_iter: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """L-BFGS on the convex objective; returns (w, b) on standardised features. ``init``: a warm start
    (the solution at a nearby strength: the CV walks the grid from strong to weak)."""
    H = z.shape[1]
    if init is None:
        p = float(y.mean().clamp(1e-4, 1 - 1e-4))
        init = (torch.zeros(H, dtype=torch.float64), torch.full((1,), float(np.log(p / (1 - p))), dtype=torch.float64))
    w = init[0].clone().requires_grad_()
    b = init[1].clone().requires_grad_()
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-7, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logit = z @ w + b
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, y) + 0.5 * l2 * (w @ w)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


AUC_TIE = 0.002
"""Strengths whose cross-validated AUC is within this of the best count as tied; the strongest of them wins."""


def choose_strength(cv: dict[float, float], y: np.ndarray) -> float:
    """The L2 strength to use, from each strength's pooled out-of-fold step AUC ``cv``.

    The PRM ranks (steps for the first error, responses for Best-of-N), so strengths are judged by held-out
    AUC: held-out BCE, the obvious alternative, rewards predicting the base rate and picked penalties that
    ranked steps worse on the shipped corpus (``docs/prm_quality.md``). Ties (within :data:`AUC_TIE`) go to the
    stronger penalty. When even the best AUC is not two standard errors above chance (Hanley-McNeil), the data
    carry no signal the head can use, and the strongest penalty keeps it at the base rate.

    >>> y = np.array([0.0, 1.0] * 50)
    >>> choose_strength({0.01: 0.80, 0.1: 0.799, 1.0: 0.70}, y)
    0.1
    >>> choose_strength({0.01: 0.53, 1.0: 0.50}, y)  # not better than chance on 100 steps
    1.0
    """
    valid = {lam: v for lam, v in cv.items() if v == v}
    if not valid:
        return float(max(cv))
    best = max(valid.values())
    pos = int((y >= 0.5).sum())
    neg = len(y) - pos
    q1, q2 = best / (2 - best), 2 * best * best / (1 + best)
    se = float(np.sqrt((best * (1 - best) + (pos - 1) * (q1 - best**2) + (neg - 1) * (q2 - best**2))
                       / max(1, pos * neg)))
    if best - 0.5 < 2 * se:
        return float(max(cv))
    return float(max(lam for lam, v in valid.items() if v >= best - AUC_TIE))


def platt(logit: np.ndarray, y: np.ndarray, iters: int = 100) -> tuple[float, float]:
    """``(a, c)`` of the 1-D logistic fit ``y ~ sigmoid(a * logit + c)`` (damped Newton, soft targets, a small
    ridge on the standardised slope): applied to out-of-fold logits it recalibrates a head whose penalty was
    chosen for ranking (a strong L2 shrinks every logit towards the base rate without changing their order).
    The slope is kept >= 0 (a recalibration never reverses the order); a degenerate fit returns ``(1, 0)``.

    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=2000)
    >>> a, c = platt(0.25 * z, (rng.random(2000) < 1 / (1 + np.exp(-(2 * z - 1)))).astype(float))
    >>> round(a, 0), round(c, 0)  # recovers the true slope 2 / 0.25 and intercept -1
    (8.0, -1.0)
    """
    logit = np.asarray(logit, np.float64)
    y = np.asarray(y, np.float64)
    sd = float(logit.std())
    if not np.isfinite(sd) or sd < 1e-9:
        return 1.0, 0.0
    mu = float(logit.mean())
    x = np.stack([(logit - mu) / sd, np.ones(len(logit))], axis=1)
    ridge = np.array([1e-3, 0.0])

    def loss(t: np.ndarray) -> float:
        z = x @ t
        return float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * (ridge * t * t).sum())

    theta = np.array([1.0, 0.0])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ theta, -50, 50)))
        g = x.T @ (p - y) / len(y) + ridge * theta
        h = (x * (p * (1 - p))[:, None]).T @ x / len(y) + np.diag(ridge + 1e-9)
        step = np.linalg.solve(h, g)
        t = 1.0
        while t > 1e-4 and loss(theta - t * step) > loss(theta):
            t /= 2
        theta = theta - t * step
        if np.abs(t * step).max() < 1e-10:
            break
    a_std, c = float(theta[0]), float(theta[1])
    if not (np.isfinite(a_std) and np.isfinite(c)) or a_std <= 0:
        return 1.0, 0.0
    return a_std / sd, c - a_std * mu / sd


def _bce(logit: torch.Tensor, y: torch.Tensor) -> float:
    return float(torch.nn.functional.binary_cross_entropy_with_logits(logit, y))


def group_folds(groups: Sequence[str], k: int, seed: int = 0) -> list[np.ndarray]:
    """Indices of each of ``k`` folds; every group lands in exactly one fold.

    >>> f = group_folds(["a", "a", "b", "c", "c", "d"], 2, seed=0)
    >>> sorted(int(i) for x in f for i in x)
    [0, 1, 2, 3, 4, 5]
    >>> all(len({["a", "a", "b", "c", "c", "d"][i] for i in x} & {["a", "a", "b", "c", "c", "d"][i]
    ...     for y in f if y is not x for i in y}) == 0 for x in f)
    True
    """
    uniq = sorted(set(groups))
    rng = np.random.default_rng(seed)
    order = [uniq[i] for i in rng.permutation(len(uniq))]
    fold_of = {g: i % k for i, g in enumerate(order)}
    g_arr = np.asarray([fold_of[g] for g in groups])
    return [np.flatnonzero(g_arr == i) for i in range(k)]


def fit_head(
    x: np.ndarray,
    y: np.ndarray,
    groups: Sequence[str] | None = None,
    *,
    l2: float | None = None,
    grid: Sequence[float] = L2_GRID,
    folds: int = 5,
    seed: int = 0,
) -> HeadFit:
    """Fit the head on features ``x`` (N, H) and float targets ``y`` (N,) in [0, 1].

    ``l2`` None: choose it from ``grid`` by ``folds``-fold cross-validation over ``groups`` (one id per row,
    e.g. the problem id; None = every row its own group), scoring the pooled held-out step AUC
    (:func:`choose_strength`). Fewer than 2 groups or one label value in the data: the largest strength of the
    grid. ``cv`` of the result: held-out AUC per strength.
    The standardisation (per-feature mean / std of ``x``) is folded into the returned ``w, b``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small dense problems: one thread is faster than two contending for the cores
    try:
        return _fit_head(x, y, groups, l2, grid, folds, seed)
    finally:
        torch.set_num_threads(threads)


def _fit_head(x: np.ndarray, y: np.ndarray, groups: Sequence[str] | None, l2: float | None,
              grid: Sequence[float], folds: int, seed: int) -> HeadFit:
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if len(x) == 0:
        raise ValueError("no training steps (every record went to the eval split?); lower eval_fraction")
    if len(x) != len(y):
        raise ValueError(f"{len(x)} feature rows but {len(y)} targets")
    mu = x.mean(0)
    sd = x.std(0)
    sd[sd < 1e-6] = 1.0
    Z = torch.from_numpy((x - mu) / sd)
    Y = torch.from_numpy(y)
    groups = list(groups) if groups is not None else [str(i) for i in range(len(x))]
    cv: dict[float, float] = {}
    oof: dict[float, np.ndarray] = {}
    scale = (1.0, 0.0)
    if l2 is None:
        n_groups = len(set(groups))
        if n_groups < 2 or float(y.min()) == float(y.max()):
            l2 = float(max(grid))
        else:
            parts = [h for h in group_folds(groups, min(folds, n_groups), seed) if 0 < len(h) < len(x)]
            warm: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(parts)
            for lam in sorted(grid, reverse=True):
                held_logit = np.zeros(len(x))
                for f, held in enumerate(parts):
                    mask = np.ones(len(x), bool)
                    mask[held] = False
                    w, b = warm[f] = _solve(Z[mask], Y[mask], lam, warm[f])
                    held_logit[held] = (Z[held] @ w + b).numpy()
                cv[float(lam)] = roc_auc(held_logit, y)
                oof[float(lam)] = held_logit
            l2 = choose_strength(cv, y)
            scale = platt(oof[l2], y)
    w, b = _solve(Z, Y, float(l2))
    w, b = w * scale[0], b * scale[0] + scale[1]  # calibrated: the penalty was chosen for ranking
    train_loss = _bce(Z @ w + b, Y)
    w_raw = (w.numpy() / sd).astype(np.float32)
    b_raw = float(b.numpy()[0] - (w.numpy() * mu / sd).sum())
    return HeadFit(w=w_raw, b=b_raw, l2=float(l2), cv=cv, train_loss=train_loss)
