"""Ground-truth tests of DDIM inversion/decoding and classifier guidance with closed-form optimal ε-models.

Data x0 ~ N(μ, σ²I) and x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε give the marginal x_t ~ N(√ᾱ_t μ, v_t I) with
v_t = ᾱ_t σ² + 1 − ᾱ_t, and the optimal ε-model ε*(x_t, t) = −√(1−ᾱ_t)∇log p(x_t) = √(1−ᾱ_t)(x_t − √ᾱ_t μ)/v_t.

Probability-flow ODE in DDIM coordinates (x̄ = x/√ᾱ, s = √((1−ᾱ)/ᾱ)):  dx̄/ds = ε*(x, t), and for the Gaussian
this is d(x̄ − μ)/ds = s/(σ² + s²)·(x̄ − μ), so (x̄ − μ)/√(σ² + s²) = (x_t − √ᾱ_t μ)/√v_t is constant along the
flow. The image sits at the clean end g_0 (ᾱ = 1, v = σ²), so its exact latent is
x_K = √ᾱ_K μ + √(v_K / σ²)·(x − μ). DDIM decoding is the Euler discretisation of that ODE (first order in the
step); fixed-point inversion is its exact inverse (backward Euler), and BDIA inverts exactly at any step size.

For the two-class mixture p(x_t) = ½N(√ᾱ μ_0, v) + ½N(√ᾱ μ_1, v) the class posterior is logistic:
logit p(y=1 | x_t) = (|x_t − √ᾱμ_0|² − |x_t − √ᾱμ_1|²)/(2v), and ∇log p(y | x_t) = (1{y=1} − p_1)·√ᾱ(μ_1 − μ_0)/v.
"""
from __future__ import annotations

import math

import pytest
import torch

from diffscm.errors import DiffSCMError
from diffscm.scm.guidance import GuidanceTerm, classifier_guided, guidance_gradient, parent_free
from diffscm.scm.sampling import (bdia_invert, bdia_sample, ddim_invert, ddim_sample, dynamic_normalise, exact_invert,
                              exact_sample, predict_x0)
from diffscm.schedule import ddim_grid, make_alphas_cumprod

torch.set_num_threads(1)

F64 = torch.float64
A = make_alphas_cumprod("linear")  # float64, t = 0..999


def _ab(t: torch.Tensor) -> torch.Tensor:
    """ᾱ_t per sample, broadcastable against (N, C, H, W)."""
    assert t.dtype == torch.long and t.dim() == 1, (t.dtype, t.shape)
    return A[t].view(-1, 1, 1, 1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _node_alpha(t: int) -> torch.Tensor:
    """ᾱ of a grid node: node 0 is the clean image (ᾱ = 1)."""
    return torch.ones((), dtype=F64) if t == 0 else A[t]


# --------------------------------------------------------------------------------------------------------------
# closed-form models
# --------------------------------------------------------------------------------------------------------------
class Gaussian:
    """x0 ~ N(μ, σ²I); σ = 0 is a point mass."""

    def __init__(self, mu: float | torch.Tensor, sigma: float):
        self.mu, self.sigma = mu, sigma

    def var(self, ab: torch.Tensor) -> torch.Tensor:
        return ab * self.sigma ** 2 + 1 - ab

    def eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = _ab(t)
        return (1 - ab).sqrt() * (x - ab.sqrt() * self.mu) / self.var(ab)

    def exact_latent(self, x: torch.Tensor, t_from: int, t_to: int) -> torch.Tensor:
        """Exact probability-flow map of the state x at node t_from to node t_to (either direction; 0 = clean)."""
        a0, a1 = _node_alpha(t_from), _node_alpha(t_to)
        return a1.sqrt() * self.mu + (self.var(a1) / self.var(a0)).sqrt() * (x - a0.sqrt() * self.mu)

    def sample(self, n: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
        return self.mu + self.sigma * torch.randn((n, *shape), generator=_gen(seed), dtype=F64)


class Mixture:
    """Equal-prior mixture of N(μ_y, σ²I), y ∈ {0, 1}; μ_y has the per-sample shape (C, H, W)."""

    def __init__(self, mu0: torch.Tensor, mu1: torch.Tensor, sigma: float):
        self.mus = torch.stack([mu0, mu1])
        self.sigma = sigma

    def _log_lik(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = _ab(t)
        v = (ab * self.sigma ** 2 + 1 - ab).flatten()
        return torch.stack([-((x - ab.sqrt() * self.mus[y]) ** 2).flatten(1).sum(1) / (2 * v) for y in (0, 1)], 1)

    def posterior(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(N, 2) exact p(y | x_t)."""
        return torch.softmax(self._log_lik(x, t), dim=1)

    def eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Exact unconditional ε* = −√(1−ᾱ)∇log p(x_t) = √(1−ᾱ)·Σ_y p(y|x_t)(x_t − √ᾱ μ_y)/v."""
        ab = _ab(t)
        v = ab * self.sigma ** 2 + 1 - ab
        w = self.posterior(x, t)
        diff = sum(w[:, y].view(-1, 1, 1, 1) * (x - ab.sqrt() * self.mus[y]) for y in (0, 1))
        return (1 - ab).sqrt() * diff / v

    def eps_given(self, x: torch.Tensor, t: torch.Tensor, y: int) -> torch.Tensor:
        """Exact class-conditional ε*(x_t | y)."""
        ab = _ab(t)
        return (1 - ab).sqrt() * (x - ab.sqrt() * self.mus[y]) / (ab * self.sigma ** 2 + 1 - ab)

    def log_posterior(self, x: torch.Tensor, t: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``log_prob(x_t, t, target) -> (N,)`` as GuidanceTerm expects."""
        lp = torch.log_softmax(self._log_lik(x, t), dim=1)
        return lp.gather(1, target.long().view(-1, 1)).squeeze(1)

    def grad_log_posterior(self, x: torch.Tensor, t: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Hand-derived ∇_x log p(target | x_t) = (1{target=1} − p_1)·√ᾱ(μ_1 − μ_0)/v."""
        ab = _ab(t)
        v = ab * self.sigma ** 2 + 1 - ab
        m0, m1 = ab.sqrt() * self.mus[0], ab.sqrt() * self.mus[1]
        logit = ((x - m0) ** 2 - (x - m1) ** 2).flatten(1).sum(1) / (2 * v.flatten())
        p1 = torch.sigmoid(logit)
        coef = (target.to(F64) - p1).view(-1, 1, 1, 1)
        return coef * ab.sqrt() * (self.mus[1] - self.mus[0]) / v

    def closer_to(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) index of the nearer component mean."""
        d = torch.stack([(x - self.mus[y]).flatten(1).norm(dim=1) for y in (0, 1)], 1)
        return d.argmin(1)


SHAPE = (1, 4, 4)  # D = 16


# --------------------------------------------------------------------------------------------------------------
# 0. the grid nodes at which ε is evaluated
# --------------------------------------------------------------------------------------------------------------
def test_eps_is_evaluated_at_the_right_nodes():
    grid = ddim_grid(10, 0.5)  # 0, 100, 200, 300, 400, 500
    seen: list[list[int]] = []

    def eps(x, t):
        assert t.dtype == torch.long and t.shape == (x.shape[0],)
        seen.append(t.tolist())
        return torch.zeros_like(x)

    x = torch.randn(3, *SHAPE, generator=_gen(0), dtype=F64)
    steps: list[int] = []
    ddim_invert(eps, x, A, grid, callback=steps.append)
    assert [s[0] for s in seen] == [0, 100, 200, 300, 400] and all(len(set(s)) == 1 for s in seen)
    assert steps == [0, 1, 2, 3, 4]
    seen.clear(), steps.clear()
    ddim_sample(eps, x, A, grid, callback=steps.append)
    assert [s[0] for s in seen] == [500, 400, 300, 200, 100]
    assert steps == [0, 1, 2, 3, 4]


# --------------------------------------------------------------------------------------------------------------
# 1. round trip decode(invert(x)) ≈ x
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_round_trip_converges_with_steps(ratio):
    model = Gaussian(0.7, 0.5)
    x = model.sample(200, SHAPE, seed=1)
    errs = {}
    for n in (10, 50, 200):
        grid = ddim_grid(n, ratio)
        z = ddim_invert(model.eps, x, A, grid)
        errs[n] = (ddim_sample(model.eps, z, A, grid) - x).abs().max().item()
    assert errs[10] > errs[50] > errs[200], errs
    assert errs[200] < 0.06, errs
    # first-order convergence of the two Euler passes: 20× more steps ⇒ roughly 20× less error
    assert errs[10] / errs[200] > 5, errs


@pytest.mark.parametrize("n,ratio", [(10, 1.0), (7, 0.5), (999, 0.25)])
def test_decoding_ends_at_the_clean_end(n, ratio):
    # σ = 0: x̂0 ≡ μ at every node, so decoding any state returns μ exactly — only if the last step lands on ᾱ = 1
    # (stopping at ᾱ[0] = 0.9999 would add √(1−ᾱ[0])·ε ≈ 0.01·ε).
    model = Gaussian(0.3, 0.0)
    grid = ddim_grid(n, ratio)
    z = torch.randn(50, *SHAPE, generator=_gen(2), dtype=F64)
    torch.testing.assert_close(ddim_sample(model.eps, z, A, grid), torch.full_like(z, 0.3), rtol=0, atol=1e-12)
    # and the last step returns x̂0 of the state at g_1 exactly
    x1 = torch.randn(50, *SHAPE, generator=_gen(3), dtype=F64)
    mix = _mixture((1, 4, 4))
    g1 = int(grid[1])
    expected = predict_x0(x1, mix.eps(x1, torch.full((50,), g1)), A[g1])
    torch.testing.assert_close(ddim_sample(mix.eps, x1, A, grid[:2]), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [10, 20])
def test_fixed_point_inversion_error_falls_with_iterations(n):
    model = Gaussian(0.7, 0.5)
    x = model.sample(100, SHAPE, seed=1)
    grid = ddim_grid(n)
    errs = [(ddim_sample(model.eps, ddim_invert(model.eps, x, A, grid, iters=k), A, grid) - x).abs().max().item()
            for k in (0, 1, 2, 3, 6, 12)]
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 0.05 * errs[0], errs
    if n == 20:
        assert errs[-1] < 1e-4, errs


def _fixed_point_eval_nodes():
    seen: list[int] = []

    def eps(x, t):
        seen.append(int(t[0]))
        return 0.1 * x

    ddim_invert(eps, torch.ones(2, *SHAPE, dtype=F64), A, ddim_grid(10, 0.3), iters=2)
    return seen


def test_fixed_point_inversion_evaluates_eps_at_the_upper_node():
    # one guess evaluation at g_0, then `iters` evaluations at each step's upper node g_{k+1}
    assert _fixed_point_eval_nodes() == [0, 100, 100, 200, 200, 300, 300]


@pytest.mark.parametrize("dtype,tol", [(F64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("scheme,n,ratio,iters", [("exact", 1, 1.0, 0), ("exact", 2, 1.0, 1), ("exact", 5, 1.0, 2),
                                                  ("exact", 10, 0.6, 0), ("exact", 300, 0.5, 1), ("bdia", 2, 1.0, 3),
                                                  ("bdia", 5, 1.0, 3), ("bdia", 10, 0.6, 0), ("bdia", 300, 0.5, 3)])
def test_exact_schemes_round_trip_to_float_precision(scheme, n, ratio, iters, dtype, tol):
    mix = _mixture((1, 4, 4))
    src = torch.randint(0, 2, (64,), generator=_gen(20))
    x = (mix.mus[src] + mix.sigma * torch.randn(64, *SHAPE, generator=_gen(21), dtype=F64)).to(dtype)
    grid = ddim_grid(n, ratio)
    a = A.to(dtype)

    def eps(z, t):
        return mix.eps(z.double(), t).to(dtype)

    # guided by a classifier: any ε-function works, as long as decoding uses the same one
    guided = classifier_guided(eps, [GuidanceTerm(lambda z, t, y: mix.log_posterior(z.double(), t, y).to(dtype),
                                                  src, 2.0)], a)
    for fn in (eps, guided):
        if scheme == "exact":
            latent = exact_invert(fn, x, a, grid, iters=iters)
            assert latent.shape == (64, len(grid), *SHAPE)
            back = exact_sample(fn, latent, a, grid)
        else:
            latent = bdia_invert(fn, x, a, grid, first_iters=iters)
            assert latent.shape == (64, 2, *SHAPE)
            back = bdia_sample(fn, latent, a, grid)
        err = (back - x).abs().max().item()
        assert err < tol, err


def test_exact_residuals_shrink_with_iterations_and_counterfactuals_still_move():
    mix = _mixture((1, 4, 4))
    B = 200
    src = torch.randint(0, 2, (B,), generator=_gen(25))
    x = mix.mus[src] + mix.sigma * torch.randn(B, *SHAPE, generator=_gen(26), dtype=F64)
    grid = ddim_grid(10)
    sizes = [exact_invert(mix.eps, x, A, grid, iters=k)[:, 1:].abs().max().item() for k in (0, 1, 3)]
    assert sizes[0] > sizes[1] > sizes[2], sizes
    latent = exact_invert(mix.eps, x, A, grid, iters=3)
    target = 1 - src
    guided = classifier_guided(mix.eps, [GuidanceTerm(mix.log_posterior, target, 3.0)], A)
    assert (mix.closer_to(exact_sample(guided, latent, A, grid)) == target).double().mean() >= 0.95


def test_bdia_with_gamma_below_one_still_inverts():
    model = Gaussian(0.7, 0.5)
    x = model.sample(50, SHAPE, seed=22)
    grid = ddim_grid(20)
    latent = bdia_invert(model.eps, x, A, grid, gamma=0.9)
    torch.testing.assert_close(bdia_sample(model.eps, latent, A, grid, gamma=0.9), x, rtol=0, atol=1e-10)


def test_conditional_abduction_then_null_decoding_and_counterfactual():
    # the parent-conditioned mechanism on the exact class-conditional ε*(x, t, y): abduct under the factual class,
    # decode under it again (null intervention: the image back) or under the other class (lands in that component)
    mix = _mixture((1, 4, 4))
    B = 200
    src = torch.randint(0, 2, (B,), generator=_gen(23))
    x = mix.mus[src] + mix.sigma * torch.randn(B, *SHAPE, generator=_gen(24), dtype=F64)

    def cond_eps(z, t, values):  # NaN = ∅: the unconditional mixture ε*
        y = values[:, 0]
        out = mix.eps(z, t)
        for c in (0, 1):
            sel = y == c
            out = torch.where(sel.view(-1, 1, 1, 1), mix.eps_given(z, t, c), out)
        return out

    grid = ddim_grid(20)
    factual = parent_free(cond_eps, src.double()[:, None], [1.0])
    cf = parent_free(cond_eps, (1 - src).double()[:, None], [1.0])
    u_exact = exact_invert(factual, x, A, grid)
    torch.testing.assert_close(exact_sample(factual, u_exact, A, grid), x, rtol=0, atol=1e-12)
    assert (mix.closer_to(exact_sample(cf, u_exact, A, grid)) == 1 - src).double().mean() >= 0.95
    u_fp = ddim_invert(factual, x, A, grid, iters=8)
    assert (ddim_sample(factual, u_fp, A, grid) - x).abs().max() < 1e-3
    assert (mix.closer_to(ddim_sample(cf, u_fp, A, grid)) == 1 - src).double().mean() >= 0.95
    # classifier-free weight w: for one parent ε(∅) + w·(ε(y) − ε(∅)), in one batched evaluation
    t = torch.full((B,), 300)
    w = parent_free(cond_eps, src.double()[:, None], [3.0])(x, t)
    e0 = cond_eps(x, t, torch.full((B, 1), float("nan"), dtype=F64))
    torch.testing.assert_close(w, e0 + 3.0 * (cond_eps(x, t, src.double()[:, None]) - e0), rtol=0, atol=1e-12)
    # per-sample weights: the weight acts on its own rows only, the others get the conditional ε alone
    per = torch.where(torch.arange(B) % 3 == 0, 3.0, 1.0)[:, None]
    mixed = parent_free(cond_eps, src.double()[:, None], per)(x, t)
    on = (torch.arange(B) % 3 == 0).view(-1, 1, 1, 1)
    torch.testing.assert_close(mixed, torch.where(on, w, cond_eps(x, t, src.double()[:, None])), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------------------
# 2. inversion → exact probability-flow latent
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_inversion_converges_to_exact_latent_first_order(ratio):
    model = Gaussian(0.7, 0.5)
    x = model.sample(200, SHAPE, seed=3)
    errs = {}
    for n in (50, 200, 998):
        grid = ddim_grid(n, ratio)
        exact = model.exact_latent(x, 0, int(grid[-1]))
        errs[n] = (ddim_invert(model.eps, x, A, grid) - exact).abs().max().item()
    assert errs[50] > errs[200] > errs[998], errs
    assert errs[998] < 0.015, errs
    for lo, hi in ((50, 200), (200, 998)):  # error ∝ 1/N (Euler); a biased target would stall this ratio
        assert 0.7 * hi / lo < errs[lo] / errs[hi] < 1.3 * hi / lo, errs


@pytest.mark.parametrize("ratio", [1.0, 1 / 3])
def test_decoding_matches_exact_flow_and_fixed_point_inverts_it(ratio):
    # Decoding the exact latent is forward Euler: error ≈ C/N, so it falls with N and the Richardson combination
    # (3·y_999 − y_333)/2 on nested grids cancels most of it. Fixed-point inversion (backward Euler) is the exact
    # inverse of decoding: the round trip is exact up to the iteration's residual, at any N.
    model = Gaussian(0.7, 0.1)
    x = model.sample(200, SHAPE, seed=4)
    g1, g3, g9 = ddim_grid(999, ratio), ddim_grid(333, ratio), ddim_grid(111, ratio)
    assert torch.equal(g1[::3], g3) and torch.equal(g1[::9], g9)
    exact = model.exact_latent(x, 0, int(g1[-1]))
    errs = [(ddim_sample(model.eps, exact, A, g) - x).abs().max().item() for g in (g9, g3, g1)]
    assert errs[0] / errs[1] > 2 and errs[1] / errs[2] > 2, errs
    xr = (3 * ddim_sample(model.eps, exact, A, g1) - ddim_sample(model.eps, exact, A, g3)) / 2
    assert (xr - x).abs().max().item() < errs[2] / 3
    for g in (g9, g3):
        z = ddim_invert(model.eps, x, A, g, iters=12)
        assert (ddim_sample(model.eps, z, A, g) - x).abs().max().item() < 1e-10
    # and its latent approaches the exact one as N grows (amplified by √(v_K)/σ ≈ 10 against the image error)
    lat = [(ddim_invert(model.eps, x, A, g, iters=12) - exact).abs().max().item() for g in (g9, g3, g1)]
    assert lat[0] > lat[1] > lat[2] and lat[2] < 12 * errs[2], (lat, errs)


# --------------------------------------------------------------------------------------------------------------
# 3. latent distribution
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_latent_is_distributed_as_the_noised_marginal(ratio):
    mu = torch.tensor([2.0, -1.0, 0.5, 3.0], dtype=F64).view(4, 1, 1)  # per-channel means, D = 4
    model = Gaussian(mu, 0.5)
    x = model.sample(2000, (4, 1, 1), seed=5)
    grid = ddim_grid(200, ratio)
    K = int(grid[-1])
    z = ddim_invert(model.eps, x, A, grid).flatten(1)  # (2000, 4)
    aK = A[K]
    torch.testing.assert_close(z.mean(0), aK.sqrt() * mu.flatten(), rtol=0, atol=0.08)
    cov = torch.cov(z.T)
    torch.testing.assert_close(cov, model.var(aK) * torch.eye(4, dtype=F64), rtol=0, atol=0.1)
    if ratio < 1:  # the mean must carry the signal at a mid-schedule endpoint (ᾱ_500 ≈ 0.08)
        assert (aK.sqrt() * mu.flatten()).abs().max() > 0.5


@pytest.mark.parametrize("eta,steps,ratio", [(0.0, 100, 1.0), (0.0, 100, 0.5), (1.0, 999, 0.5)])
def test_decoding_the_noised_marginal_gives_the_data_distribution(eta, steps, ratio):
    # Start from the exact marginal at g_K; deterministic (η = 0) and ancestral (η = 1) decoding with ε* must both
    # return N(μ, σ²I) (η = 1 has a larger step bias, hence the fine grid).
    mu = torch.tensor([2.0, -1.0, 0.5, 3.0], dtype=F64).view(4, 1, 1)
    model = Gaussian(mu, 0.5)
    grid = ddim_grid(steps, ratio)
    aK = A[int(grid[-1])]
    z = aK.sqrt() * mu + model.var(aK).sqrt() * torch.randn(2000, 4, 1, 1, generator=_gen(14), dtype=F64)
    y = ddim_sample(model.eps, z, A, grid, eta=eta, generator=_gen(15))
    std = ((y - mu) / model.sigma).flatten(1)
    torch.testing.assert_close(std.mean(0), torch.zeros(4, dtype=F64), rtol=0, atol=0.1)
    assert abs(std.std().item() - 1.0) < 0.05, std.std()
    if eta > 0:  # the noise comes from the generator: reproducible with the same seed, different without
        torch.testing.assert_close(ddim_sample(model.eps, z, A, grid[:50], eta=eta, generator=_gen(15)),
                                   ddim_sample(model.eps, z, A, grid[:50], eta=eta, generator=_gen(15)), rtol=0, atol=0)
        assert not torch.equal(ddim_sample(model.eps, z, A, grid[:50], eta=eta, generator=_gen(16)),
                               ddim_sample(model.eps, z, A, grid[:50], eta=eta, generator=_gen(15)))


# --------------------------------------------------------------------------------------------------------------
# 4. guidance moves samples to the target component
# --------------------------------------------------------------------------------------------------------------
def _mixture(D_shape=(1, 2, 2)) -> Mixture:
    return Mixture(-2 * torch.ones(D_shape, dtype=F64), 2 * torch.ones(D_shape, dtype=F64), 0.5)


def test_guidance_strength_moves_samples_to_target_component():
    mix = _mixture()
    B = 200
    x = mix.mus[0] + mix.sigma * torch.randn(B, 1, 2, 2, generator=_gen(6), dtype=F64)
    grid = ddim_grid(50, 0.6)
    z = ddim_invert(mix.eps, x, A, grid)
    target = torch.ones(B, dtype=torch.long)
    frac = {}
    outs = {}
    for s in (0.0, 0.3, 1.0, 3.0):
        eps = classifier_guided(mix.eps, [GuidanceTerm(mix.log_posterior, target, s)], A)
        if s == 0:
            assert eps == mix.eps  # all scales 0: the unguided function itself (bound methods compare by ==)
        outs[s] = ddim_sample(eps, z, A, grid)
        frac[s] = (mix.closer_to(outs[s]) == 1).double().mean().item()
    # s = 0 is the plain round trip: back to the source component, close to the input
    assert frac[0.0] == 0.0
    assert (outs[0.0] - x).abs().max().item() < 0.25
    assert frac[0.0] < frac[0.3] < frac[1.0] <= frac[3.0], frac
    assert frac[1.0] >= 0.9 and frac[3.0] >= 0.9, frac
    # s = 3 lands inside the target component, not just past the midpoint
    d1 = (outs[3.0] - mix.mus[1]).flatten(1).norm(dim=1)
    assert d1.median().item() < 3 * mix.sigma * math.sqrt(4), d1.median()


def test_guidance_per_sample_targets():
    mix = _mixture()
    B = 200
    src = torch.randint(0, 2, (B,), generator=_gen(7))
    target = torch.randint(0, 2, (B,), generator=_gen(8))
    x = mix.mus[src] + mix.sigma * torch.randn(B, 1, 2, 2, generator=_gen(9), dtype=F64)
    assert (mix.closer_to(x) == src).all()
    grid = ddim_grid(50, 0.6)
    z = ddim_invert(mix.eps, x, A, grid)
    eps = classifier_guided(mix.eps, [GuidanceTerm(mix.log_posterior, target, 3.0)], A)
    y = ddim_sample(eps, z, A, grid)
    landed = mix.closer_to(y)
    for s_ in (0, 1):
        for t_ in (0, 1):
            sel = (src == s_) & (target == t_)
            assert sel.sum() >= 30
            acc = (landed[sel] == t_).double().mean().item()
            assert acc >= 0.95, (s_, t_, acc)


def test_guidance_per_sample_scale_tensor():
    mix = _mixture()
    B = 200
    x = mix.mus[0] + mix.sigma * torch.randn(B, 1, 2, 2, generator=_gen(10), dtype=F64)
    grid = ddim_grid(50, 0.6)
    z = ddim_invert(mix.eps, x, A, grid)
    scale = torch.cat([torch.zeros(B // 2, dtype=F64), torch.full((B // 2,), 3.0, dtype=F64)])
    eps = classifier_guided(mix.eps, [GuidanceTerm(mix.log_posterior, torch.ones(B), scale)], A)
    y = ddim_sample(eps, z, A, grid)
    plain = ddim_sample(mix.eps, z, A, grid)
    # unscaled rows follow the unguided ODE exactly; scaled rows switch component
    torch.testing.assert_close(y[: B // 2], plain[: B // 2], rtol=0, atol=1e-12)
    assert (mix.closer_to(y[: B // 2]) == 0).all()
    assert (mix.closer_to(y[B // 2:]) == 1).double().mean().item() >= 0.95


# --------------------------------------------------------------------------------------------------------------
# 5. guidance_gradient and classifier_guided against hand-derived formulas
# --------------------------------------------------------------------------------------------------------------
def _asym_mixture() -> Mixture:
    g = _gen(11)
    mu0 = torch.randn(2, 2, 2, generator=g, dtype=F64)
    mu1 = torch.randn(2, 2, 2, generator=g, dtype=F64) + 1.0
    return Mixture(mu0, mu1, 0.7)


def _batch(n=64, seed=12):
    g = _gen(seed)
    x = 1.5 * torch.randn(n, 2, 2, 2, generator=g, dtype=F64)
    t = torch.randint(0, 1000, (n,), generator=g)
    target = torch.randint(0, 2, (n,), generator=g)
    return x, t, target


def test_guidance_gradient_matches_analytic_gradient():
    mix = _asym_mixture()
    x, t, target = _batch()
    grad = guidance_gradient([GuidanceTerm(mix.log_posterior, target, 1.0)], x, t)
    expected = mix.grad_log_posterior(x, t, target)
    assert expected.abs().max() > 1e-2  # non-trivial comparison
    torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-12)
    # float scale and several terms add up: 2.5·∇log p(target) − 0.5·∇log p(1 − target)
    terms = [GuidanceTerm(mix.log_posterior, target, 2.5), GuidanceTerm(mix.log_posterior, 1 - target, -0.5)]
    expected2 = 2.5 * expected - 0.5 * mix.grad_log_posterior(x, t, 1 - target)
    torch.testing.assert_close(guidance_gradient(terms, x, t), expected2, rtol=1e-9, atol=1e-12)
    assert not x.requires_grad and x.grad is None


def test_guidance_gradient_per_sample_scale_and_inference_mode():
    mix = _asym_mixture()
    x, t, target = _batch()
    scale = torch.linspace(-2, 4, x.shape[0], dtype=F64)
    with torch.inference_mode():
        xi = x.clone()
        grad = guidance_gradient([GuidanceTerm(mix.log_posterior, target, scale)], xi, t)
    expected = scale.view(-1, 1, 1, 1) * mix.grad_log_posterior(x, t, target)
    torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-12)


def test_classifier_guided_formula_and_sign():
    mix = _asym_mixture()
    x, t, target = _batch()
    scale = torch.linspace(0.0, 3.0, x.shape[0], dtype=F64)
    eps = classifier_guided(mix.eps, [GuidanceTerm(mix.log_posterior, target, scale)], A)(x, t)
    expected = mix.eps(x, t) - (1 - _ab(t)).sqrt() * scale.view(-1, 1, 1, 1) * mix.grad_log_posterior(x, t, target)
    torch.testing.assert_close(eps, expected, rtol=1e-9, atol=1e-12)
    # Bayes: with s = 1, ε* − √(1−ᾱ)∇log p(y|x_t) = −√(1−ᾱ)∇log p(x_t|y), the exact class-conditional ε*
    for y in (0, 1):
        tgt = torch.full((x.shape[0],), y)
        eps1 = classifier_guided(mix.eps, [GuidanceTerm(mix.log_posterior, tgt, 1.0)], A)(x, t)
        torch.testing.assert_close(eps1, mix.eps_given(x, t, y), rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------------------------------------------
# 6. dynamic_normalise and predict_x0
# --------------------------------------------------------------------------------------------------------------
def test_dynamic_normalise_hand_example():
    x = torch.zeros(3, 2, 10, 10, dtype=F64)
    inside = torch.linspace(-0.9, 0.9, 100, dtype=F64).view(10, 10)
    x[0, 0] = inside                       # |x| ≤ 1: untouched
    x[0, 1] = 0.8 * inside / 0.9           # max 0.8: quantile < 1 is floored at 1, so not stretched
    outlier = torch.full((10, 10), 0.5, dtype=F64)
    outlier[3, 7] = -100.0
    x[1, 0] = outlier                      # one huge outlier among 99 × 0.5
    x[1, 1] = inside                       # same sample, other channel: untouched (per-channel scale)
    ramp = torch.arange(1, 101, dtype=F64).view(10, 10) / 10  # |x| = 0.1 … 10.0
    x[2, 0] = ramp
    x[2, 1] = -ramp
    y = dynamic_normalise(x)

    torch.testing.assert_close(y[0], x[0], rtol=0, atol=0)
    torch.testing.assert_close(y[1, 1], x[1, 1], rtol=0, atol=0)
    # sorted |x| = 99 × 0.5 then 100; the 0.99 quantile sits at position 0.99·99 = 98.01:
    # s = 0.5 + 0.01·(100 − 0.5) = 1.495; outlier → −s/s = −1, the rest 0.5/1.495.
    # (The quantile is taken in float32: 0.99·99 rounds to 98.0100021, and the 100× outlier amplifies that to a
    # 1.4e-4 relative error in s — hence rtol 5e-4 rather than float64 precision.)
    s = 1.495
    exp = torch.full((10, 10), 0.5 / s, dtype=F64)
    exp[3, 7] = -1.0
    torch.testing.assert_close(y[1, 0], exp, rtol=5e-4, atol=0)
    # ramp: position 98.01 between 9.9 and 10.0 → s = 9.901; values above s clip to ±1
    s = 9.901
    exp = (ramp.clamp(max=s) / s)
    torch.testing.assert_close(y[2, 0], exp, rtol=5e-4, atol=0)
    torch.testing.assert_close(y[2, 1], -exp, rtol=5e-4, atol=0)
    assert y.abs().max() <= 1.0 + 1e-12
    assert y.dtype == F64


def test_predict_x0_inverts_the_forward_process():
    g = _gen(13)
    x0, e = torch.randn(5, *SHAPE, generator=g, dtype=F64), torch.randn(5, *SHAPE, generator=g, dtype=F64)
    for t in (0, 500, 999):
        a = A[t]
        torch.testing.assert_close(predict_x0(a.sqrt() * x0 + (1 - a).sqrt() * e, e, a), x0, rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------------------------------------------
# 7. schedule and grid
# --------------------------------------------------------------------------------------------------------------
def test_linear_schedule_values():
    assert A.dtype == F64 and A.shape == (1000,)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    assert A[0].item() == pytest.approx(1 - 1e-4, abs=1e-15)
    assert A[1].item() == pytest.approx((1 - 1e-4) * (1 - (1e-4 + 0.0199 / 999)), rel=1e-13)
    assert A[999].item() == pytest.approx(math.exp(torch.log1p(-betas).sum().item()), rel=1e-10)
    assert (A[1:] < A[:-1]).all()


def test_ddim_grid_values():
    g = ddim_grid(50)
    assert g.dtype == torch.long and len(g) == 51
    assert g[:4].tolist() == [0, 20, 40, 60] and g[-1].item() == 999
    assert (g[1:] > g[:-1]).all()
    diffs = (g[1:] - g[:-1]).unique().tolist()
    assert set(diffs) <= {19, 20, 21}
    g = ddim_grid(100, 0.75)
    assert len(g) == 76 and g[0].item() == 0 and g[-1].item() == 749 and g[1].item() == 10
    assert torch.equal(g, ddim_grid(100)[:76])
    assert ddim_grid(1).tolist() == [0, 999]
    assert ddim_grid(999).tolist() == list(range(1000))
    assert ddim_grid(10, 0.1).tolist() == [0, 100]
    assert ddim_grid(20, 0.5, num_train_timesteps=101).tolist() == list(range(0, 55, 5))
    for n in range(1, 1000):  # every legal step count: distinct increasing nodes from 0 to T−1
        g = ddim_grid(n)
        assert len(g) == n + 1 and g[0] == 0 and g[-1] == 999 and bool((g[1:] > g[:-1]).all()), n


@pytest.mark.parametrize("kwargs", [
    dict(steps=0), dict(steps=-3), dict(steps=1000), dict(steps=50, ratio=0.0), dict(steps=50, ratio=1.5),
    dict(steps=50, ratio=-0.5), dict(steps=10, ratio=0.05), dict(steps=100, num_train_timesteps=100),
])
def test_ddim_grid_bad_arguments(kwargs):
    with pytest.raises(DiffSCMError):
        ddim_grid(**kwargs)


def test_unknown_schedule_raises():
    assert issubclass(DiffSCMError, ValueError)
    with pytest.raises(DiffSCMError):
        make_alphas_cumprod("quadratic")
