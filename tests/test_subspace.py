"""ES in a random subspace: the basis, the change of variables and the estimate."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from esmeta_core import es, subspace


def _cosine(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_basis_rows_have_unit_variance_so_sigma_keeps_its_meaning():
    basis = subspace.random_basis(jax.random.key(0), 2000, 64)
    assert basis.shape == (2000, 64)
    row_norms_sq = np.sum(np.asarray(basis) ** 2, axis=1)
    assert abs(row_norms_sq.mean() - 1.0) < 0.02


def test_basis_is_fixed_by_the_seed():
    a = subspace.random_basis(subspace.basis_key(3), 50, 4)
    b = subspace.random_basis(subspace.basis_key(3), 50, 4)
    c = subspace.random_basis(subspace.basis_key(4), 50, 4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("dim", [0, -3, 2.5])
def test_bad_dim_raises(dim):
    with pytest.raises(ValueError, match="subspace dim"):
        subspace.random_basis(jax.random.key(0), 10, dim)


def test_change_of_variables_is_the_chain_rule():
    params = {"w": jnp.arange(6.0).reshape(2, 3) / 10, "b": jnp.ones(4)}
    loss = lambda p: jnp.sum(jnp.sin(p["w"])) + jnp.sum(p["b"] ** 3)
    key = jax.random.key(1)
    z_loss, z0, to_params_grad, to_z = subspace.in_subspace(loss, params, key, 5)
    assert z0.shape == (5,)
    np.testing.assert_allclose(z_loss(z0), loss(params), rtol=1e-6)
    # d/dz L(theta + P z) at 0 is P^T grad L; mapped back it is P P^T grad L.
    expected = subspace.project_gradient(jax.grad(loss)(params), key, 5)
    got = to_params_grad(jax.grad(z_loss)(z0))
    for leaf_got, leaf_expected in zip(
        jax.tree.leaves(got), jax.tree.leaves(expected), strict=True
    ):
        np.testing.assert_allclose(leaf_got, leaf_expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_z(jax.grad(loss)(params)), jax.grad(z_loss)(z0), rtol=1e-5)


def test_subspace_es_estimates_the_projected_gradient():
    """With many members the estimate lines up with P P^T grad, not with grad itself."""
    rng = np.random.default_rng(0)
    target = jnp.asarray(rng.normal(size=40), jnp.float32)
    loss = lambda p: jnp.sum((p["x"] - target) ** 2)
    params = {"x": jnp.zeros(40)}
    key = subspace.basis_key(0)
    config = es.ESConfig(population=8192, sigma=0.01, shaping="raw", chunk_size=512)
    grads, _ = es.es_grad_with_options(
        loss, params, jax.random.key(5), config=config, subspace_dim=4, subspace_key=key
    )
    true = jax.grad(loss)(params)
    projected = subspace.project_gradient(true, key, 4)
    assert _cosine(grads["x"], projected["x"]) > 0.99
    # a 4-dimensional subspace of 40 holds about a tenth of the gradient's direction
    assert _cosine(grads["x"], true["x"]) < 0.7


def test_subspace_needs_a_key():
    with pytest.raises(ValueError, match="subspace_key"):
        es.es_grad_with_options(jnp.sum, jnp.zeros(3), jax.random.key(0), subspace_dim=2)


def test_subspace_helps_the_subspace_gradient_not_the_full_one():
    """The docstring's claim on a linear loss (32 antithetic pairs, D = 2000, d = 200).

    The estimate's cosine to P P^T g is about sqrt(32 / d) = 0.40, well above plain ES's
    sqrt(32 / D) = 0.13 to g; but its cosine to g itself stays about that 0.13.
    """
    dim, size = 200, 2000
    g = jnp.asarray(np.random.default_rng(1).normal(size=size), jnp.float32)
    loss = lambda x: jnp.dot(g, x)
    config = es.ESConfig(population=64, sigma=0.01, shaping="raw")
    basis_key = subspace.basis_key(0)
    projected = subspace.project_gradient(g, basis_key, dim)

    @jax.jit
    def estimates(key):
        plain, _ = es.es_grad_with_options(loss, jnp.zeros(size), key, config=config)
        sub, _ = es.es_grad_with_options(
            loss, jnp.zeros(size), key, config=config, subspace_dim=dim, subspace_key=basis_key
        )
        return plain, sub

    plain_to_g, sub_to_g, sub_to_projected = [], [], []
    for k in range(16):
        plain, sub = estimates(jax.random.key(100 + k))
        plain_to_g.append(_cosine(plain, g))
        sub_to_g.append(_cosine(sub, g))
        sub_to_projected.append(_cosine(sub, projected))
    plain_to_g, sub_to_g = np.mean(plain_to_g), np.mean(sub_to_g)
    assert 0.08 < plain_to_g < 0.18
    assert np.mean(sub_to_projected) > 2 * plain_to_g
    assert 0.6 * plain_to_g < sub_to_g < 1.4 * plain_to_g
