"""Metrics against hand-computed values and closed forms."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffscm.eval.metrics import (bootstrap_ci, cld, cld_per_image, effectiveness_hits, frechet_distance, gaussian_kl,
                             kernel_distance,
                             l1_255, pairwise_kl, ssim_per_image)


def test_gaussian_kl_matches_closed_form_1d():
    # KL(N(1, 2²) ‖ N(0, 1)) = log(1/2) + (4 + 1)/2 − 1/2 = 2 − log 2
    mu_a, lv_a = np.array([1.0]), np.array([math.log(4.0)])
    mu_b, lv_b = np.array([0.0]), np.array([0.0])
    assert gaussian_kl(mu_a, lv_a, mu_b, lv_b) == pytest.approx(2 - math.log(2), abs=1e-12)
    # and the reverse direction: KL(N(0,1) ‖ N(1, 4)) = log 2 + (1 + 1)/8 − 1/2
    assert gaussian_kl(mu_b, lv_b, mu_a, lv_a) == pytest.approx(math.log(2) + 0.25 - 0.5, abs=1e-12)


def test_gaussian_kl_uses_both_variances_and_matches_torch():
    g = torch.Generator().manual_seed(0)
    mu_a, mu_b = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    lv_a, lv_b = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Independent(torch.distributions.Normal(mu_a, (0.5 * lv_a).exp()), 1),
        torch.distributions.Independent(torch.distributions.Normal(mu_b, (0.5 * lv_b).exp()), 1))
    torch.testing.assert_close(gaussian_kl(mu_a, lv_a, mu_b, lv_b), ref)
    # same means, different variances: the μ-only shortcut of the public benchmark would give 0 here
    assert (gaussian_kl(mu_a, lv_a, mu_a, lv_b) > 0).all()
    pair = pairwise_kl(mu_a, lv_a, mu_b, lv_b, chunk=2)
    torch.testing.assert_close(pair[2, 4], gaussian_kl(mu_a[2], lv_a[2], mu_b[4], lv_b[4]))


def test_cld_hand_built_probabilities():
    # div = 2; S_cf = {1, 3, 5, 7}: P1 = P(S_cf ≤ 2) = 1/4; S_f = {0, 2, 4}: P2 = P(S_f ≥ 2) = 2/3
    out = cld_per_image(np.array([2.0]), [np.array([1, 3, 5, 7.0])], [np.array([0, 2, 4.0])])
    assert out[0] == pytest.approx(math.log(0.8 * math.exp(0.25) + 0.2 * math.exp(2 / 3)), abs=1e-12)
    eq = cld_per_image(np.array([2.0]), [np.array([1, 3, 5, 7.0])], [np.array([0, 2, 4.0])], 0.5, 0.5)
    assert eq[0] == pytest.approx(math.log(0.5 * math.exp(0.25) + 0.5 * math.exp(2 / 3)), abs=1e-12)
    # extremes: an unchanged image (div 0 below everything) has P1 = 0, P2 = 1
    assert cld_per_image(np.array([0.0]), [np.array([1.0, 2.0])], [np.array([1.0])])[0] == pytest.approx(
        math.log(0.8 + 0.2 * math.e))


def test_cld_from_posteriors_selects_pools_by_parent_and_excludes_self():
    # 1-D posteriors with unit variance: KL = (μa − μb)²/2.
    mu = lambda v: torch.tensor(v, dtype=torch.float64).view(-1, 1)  # noqa: E731
    zeros = lambda n: torch.zeros(n, 1, dtype=torch.float64)  # noqa: E731
    ref_mu = mu([0.0, 1.0, 2.0, 3.0, 4.0])
    ref_digits = np.array([0, 0, 1, 1, 1])
    x = (mu([0.0]), zeros(1))
    cf = (mu([2.0]), zeros(1))  # div = 2
    # S_cf (digit 1) = {2, 4.5, 8}: P1 = 1/3; S_f (digit 0, self at index 0 excluded) = {0.5}: P2 = 0
    val = cld(x, cf, (ref_mu, zeros(5)), np.array([0]), np.array([1]), ref_digits, exclude_ref=np.array([0]))
    assert val[0] == pytest.approx(math.log(0.8 * math.exp(1 / 3) + 0.2), abs=1e-12)


def test_effectiveness_with_perfect_and_inverted_oracle():
    targets = np.array([3, 1, 4, 1, 5])
    images = np.zeros((5, 28, 28), np.uint8)
    assert effectiveness_hits(lambda _x: targets, images, targets).mean() == 1.0
    assert effectiveness_hits(lambda _x: (targets + 1) % 10, images, targets).mean() == 0.0
    half = effectiveness_hits(lambda _x: np.array([3, 1, 0, 0, 0]), images, targets)
    np.testing.assert_array_equal(half, [1, 1, 0, 0, 0])
    with pytest.raises(ValueError):
        effectiveness_hits(lambda _x: targets[:2], images, targets)


def test_l1_and_ssim_hand_values():
    a = np.zeros((2, 4, 4), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 160  # one pixel of 16 differs by 160 -> mean 10
    np.testing.assert_allclose(l1_255(a, b), [10.0, 0.0])
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 28, 28)).astype(np.uint8)
    np.testing.assert_allclose(ssim_per_image(x, x), 1.0, atol=1e-9)
    assert (ssim_per_image(x, 255 - x) < 0.1).all()


def test_frechet_distance_self_zero_and_shift():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(400, 6))
    assert abs(frechet_distance(f, f)) < 1e-6
    # equal covariances: FID = ‖Δμ‖² exactly
    assert frechet_distance(f, f + np.array([1.0, 2, 0, 0, 0, 0])) == pytest.approx(5.0, abs=1e-6)
    # independent samples of the same law: small but positive
    assert 0 < frechet_distance(f, rng.normal(size=(400, 6))) < 0.3
    with pytest.raises(ValueError):
        frechet_distance(f, f[:, :3])


def test_bootstrap_reproducible_and_covers_mean():
    v = np.random.default_rng(1).normal(3.0, 1.0, 500)
    a, b = bootstrap_ci(v, seed=7), bootstrap_ci(v, seed=7)
    assert a == b
    assert bootstrap_ci(v, seed=8) != a
    assert a[0] < v.mean() < a[1]
    assert a[1] - a[0] == pytest.approx(2 * 1.96 / math.sqrt(500), rel=0.2)
    # the basic interval mirrors the percentile one around the estimate
    lo, hi = bootstrap_ci(v, seed=7, basic=True)
    assert lo == pytest.approx(2 * v.mean() - a[1]) and hi == pytest.approx(2 * v.mean() - a[0])
    const = bootstrap_ci(np.full(10, 2.0))
    assert const == (2.0, 2.0)
    with pytest.raises(ValueError):
        bootstrap_ci(np.array([]))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Hand-written unbiased MMD² with the cubic polynomial kernel k(a, b) = (a·b/d + 1)³."""
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    m = len(x)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2 * kxy.mean())


def test_kernel_distance_matches_hand_computed_mmd():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(60, 5)), rng.normal(0.5, 1.2, size=(60, 5))
    # one subset of every row: the estimator is the full-sample unbiased MMD², whatever the permutation
    mean, std = kernel_distance(real, fake, subsets=1, subset_size=60)
    assert mean == pytest.approx(_mmd2_unbiased(real, fake), rel=1e-9)
    assert std == 0.0
    # subsets: reproducible from the seed, near zero for two samples of one distribution, ordered by shift
    a = kernel_distance(real, fake, subsets=20, subset_size=30, seed=1)
    assert a == kernel_distance(real, fake, subsets=20, subset_size=30, seed=1) and a[1] > 0
    same = kernel_distance(real, rng.normal(size=(60, 5)), subsets=20, subset_size=30)[0]
    assert abs(same) < a[0] < kernel_distance(real, fake + 1.0, subsets=20, subset_size=30)[0]
    with pytest.raises(ValueError):
        kernel_distance(real, fake[:, :3])
