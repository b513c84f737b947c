"""ProtoNet maths on hand-built cases, query chunking, batch-norm statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from esmeta_core import protonet
from esmeta_core.data import Episode


def test_prototypes_and_distances_match_hand_computation():
    z_support = jnp.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 2.0]])
    protos = protonet.prototypes(z_support, jnp.array([0, 0, 1, 1]), way=2)
    np.testing.assert_allclose(protos, [[1.0, 0.0], [0.0, 3.0]])
    d2 = protonet.squared_distances(jnp.array([[1.0, 1.0]]), protos)
    np.testing.assert_allclose(d2, [[1.0, 5.0]], rtol=1e-6)


def _numpy_episode_loss(z_support, support_labels, z_query, query_labels, way):
    protos = np.stack([z_support[support_labels == k].mean(0) for k in range(way)])
    d2 = ((z_query[:, None, :] - protos[None]) ** 2).sum(-1)
    logits = -d2
    log_probs = (
        logits
        - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
        - logits.max(1, keepdims=True)
    )
    loss = -log_probs[np.arange(len(query_labels)), query_labels].mean()
    acc = (logits.argmax(1) == query_labels).mean()
    return loss, acc


@pytest.fixture(scope="module")
def tiny():
    model = protonet.Conv4(width=8)
    params = protonet.init_params(jax.random.key(0), model)
    rng = np.random.default_rng(0)
    episode = Episode(
        support=rng.random((6, 28, 28, 1), np.float32),
        support_labels=np.repeat(np.arange(3), 2).astype(np.int32),
        query=rng.random((12, 28, 28, 1), np.float32),
        query_labels=np.repeat(np.arange(3), 4).astype(np.int32),
    )
    return model, params, episode


def test_episode_loss_matches_formula(tiny):
    model, params, ep = tiny
    z = np.asarray(
        model.apply({"params": params}, jnp.concatenate([ep.support, ep.query]), stats_rows=6)
    )
    want_loss, want_acc = _numpy_episode_loss(z[:6], ep.support_labels, z[6:], ep.query_labels, 3)
    loss, acc = protonet.episode_loss_and_accuracy(model, params, ep, way=3)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-4)
    np.testing.assert_allclose(acc, want_acc)


def test_query_chunks_give_the_same_loss(tiny):
    model, params, ep = tiny
    whole = protonet.episode_loss_and_accuracy(model, params, ep, way=3)
    for chunk in (1, 3, 6):
        chunked = jax.jit(
            lambda p, e, c=chunk: protonet.episode_loss_and_accuracy(
                model, p, e, way=3, query_chunk=c
            )
        )(params, ep)
        np.testing.assert_allclose(chunked, whole, rtol=1e-5)


def test_queries_do_not_influence_each_other(tiny):
    model, params, ep = tiny
    z1 = model.apply({"params": params}, jnp.concatenate([ep.support, ep.query]), stats_rows=6)
    other = ep.query.copy()
    other[1:] = 0.0  # change every query but the first
    z2 = model.apply({"params": params}, jnp.concatenate([ep.support, other]), stats_rows=6)
    np.testing.assert_allclose(z1[6], z2[6], rtol=1e-5)


@pytest.mark.parametrize("width", [8, 32, 64], ids=["w8", "w32", "w64"])
def test_width_sets_embedding_size(width):
    model = protonet.Conv4(width=width)
    params = protonet.init_params(jax.random.key(0), model)
    z = model.apply({"params": params}, jnp.zeros((3, 28, 28, 1)))
    assert z.shape == (3, width)
    expected = 9 * width + 3 * 9 * width * width + 4 * width + 4 * 2 * width
    assert protonet.num_params(params) == expected


def test_indivisible_query_chunk_is_rejected(tiny):
    model, params, ep = tiny
    with pytest.raises(ValueError, match="must divide"):
        protonet.episode_loss_and_accuracy(model, params, ep, way=3, query_chunk=5)


def test_feature_transform_with_zero_spread_is_the_identity(tiny):
    """softplus(-inf) = 0: gamma = 1 and beta = 0 exactly, so the embedding is unchanged."""
    model, params, ep = tiny
    x = jnp.concatenate([ep.support, ep.query])
    hyper = protonet.init_fwt_hyperparams(model.depth, model.width, gamma=-jnp.inf, beta=-jnp.inf)
    transform = protonet.sample_feature_transform(jax.random.key(1), hyper)
    np.testing.assert_array_equal(transform.gamma, 1.0)
    np.testing.assert_array_equal(transform.beta, 0.0)
    plain = model.apply({"params": params}, x, stats_rows=6)
    same = model.apply({"params": params}, x, stats_rows=6, transform=transform)
    np.testing.assert_array_equal(plain, same)
    spread = protonet.sample_feature_transform(
        jax.random.key(1), protonet.init_fwt_hyperparams(model.depth, model.width)
    )
    assert not np.allclose(
        plain, model.apply({"params": params}, x, stats_rows=6, transform=spread)
    )


def test_feature_transform_follows_tseng_eq_1_2_and_is_differentiable():
    """Mean 1 and 0, standard deviations softplus(theta); d gamma / d theta = eps sigmoid(theta)."""
    hyper = protonet.init_fwt_hyperparams(4, 50_000)
    t = protonet.sample_feature_transform(jax.random.key(0), hyper)
    assert t.gamma.shape == t.beta.shape == (4, 50_000)
    np.testing.assert_allclose(t.gamma.mean(), 1.0, atol=0.01)
    np.testing.assert_allclose(t.beta.mean(), 0.0, atol=0.01)
    np.testing.assert_allclose(t.gamma.std(), jax.nn.softplus(0.3), rtol=0.01)
    np.testing.assert_allclose(t.beta.std(), jax.nn.softplus(0.5), rtol=0.01)
    small = protonet.init_fwt_hyperparams(1, 3)
    grad = jax.grad(lambda h: protonet.sample_feature_transform(jax.random.key(0), h).gamma.sum())
    eps = (protonet.sample_feature_transform(jax.random.key(0), small).gamma - 1) / jax.nn.softplus(
        0.3
    )
    np.testing.assert_allclose(grad(small)["gamma"], eps * jax.nn.sigmoid(0.3), rtol=1e-5)


def test_fwt_theta_is_the_inverse_softplus():
    for std in (0.1, 0.3, 0.5, 0.8544, 2.0):
        np.testing.assert_allclose(jax.nn.softplus(protonet.fwt_theta(std)), std, rtol=1e-6)
    np.testing.assert_allclose(protonet.fwt_theta(float(jax.nn.softplus(0.3))), 0.3, rtol=1e-5)
    with pytest.raises(ValueError, match="must be positive"):
        protonet.fwt_theta(0.0)


def test_feature_transform_of_the_wrong_shape_is_rejected(tiny):
    model, params, ep = tiny
    wrong = protonet.sample_feature_transform(
        jax.random.key(0), protonet.init_fwt_hyperparams(model.depth, model.width + 1)
    )
    with pytest.raises(ValueError, match="transform must be f32\\[depth, width\\]"):
        protonet.episode_loss(model, params, ep, way=3, transform=wrong)
