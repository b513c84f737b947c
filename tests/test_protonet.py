"""ProtoNet maths on hand-built cases, query chunking, batch-norm statistics."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.reference_conv4 import PlainConv4
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


@pytest.mark.parametrize("width", [4, 16])
def test_conv4_matches_the_plain_flax_composition(width):
    """Same parameters (names, shapes, initial values) and the same embedding as nn.Conv +
    batch norm + ReLU + nn.max_pool, for any sign of the batch-norm scale (pooling before
    the offset and ReLU is exact only because the multiplier is applied first)."""
    model, plain = protonet.Conv4(width), PlainConv4(width)
    params = protonet.init_params(jax.random.key(3), model)
    plain_params = plain.init(jax.random.key(3), jnp.zeros((2, 28, 28, 1)))["params"]
    assert jax.tree.structure(params) == jax.tree.structure(plain_params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(plain_params), strict=True):
        np.testing.assert_array_equal(a, b)
    # Random parameters: negative batch-norm scales and nonzero conv biases included.
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(4), len(leaves))
    params = jax.tree.unflatten(
        treedef, [x + jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    )
    assert min(float(params[f"SupportBatchNorm_{i}"]["scale"].min()) for i in range(4)) < 0
    images = jax.random.normal(jax.random.key(5), (12, 28, 28, 1))
    got = model.apply({"params": params}, images, stats_rows=7)
    want = plain.apply({"params": params}, images, stats_rows=7)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # With FWT layers (negative gammas included) the two agree as well.
    hyper = protonet.init_fwt_hyperparams(4, width, gamma=1.0, beta=1.0)
    transform = protonet.sample_feature_transform(jax.random.key(6), hyper)
    assert float(transform.gamma.min()) < 0
    got = model.apply({"params": params}, images, stats_rows=7, transform=transform)
    want = plain.apply({"params": params}, images, stats_rows=7, transform=transform)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_conv3x3_on_one_channel_matches_lax_conv():
    """The first layer's patch matmul is the 'SAME' 3x3 convolution."""
    x = jax.random.normal(jax.random.key(0), (3, 9, 7, 1))
    conv = protonet.Conv3x3(5)
    params = conv.init(jax.random.key(1), x)["params"]
    want = jax.lax.conv_general_dilated(
        x, params["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(conv.apply({"params": params}, x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(4, 6), (7, 3), (3, 5)])
def test_max_pool_2x2_matches_flax(size):
    x = jax.random.normal(jax.random.key(0), (2, *size, 3))
    want = nn.max_pool(x, (2, 2), strides=(2, 2))
    np.testing.assert_array_equal(protonet.max_pool_2x2(x), want)


def test_support_batch_norm_call_is_its_affine_map():
    x = jax.random.normal(jax.random.key(0), (6, 4, 4, 3)) * 2.0 + 1.0
    bn = protonet.SupportBatchNorm()
    params = bn.init(jax.random.key(1), x, 4)["params"]
    out = bn.apply({"params": params}, x, 4)
    reference = out[:4]
    np.testing.assert_allclose(reference.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(reference.var(axis=(0, 1, 2)), 1.0, rtol=1e-3)


def test_batch_norm_from_moments_is_its_affine_map_of_the_same_statistics():
    x = jax.random.normal(jax.random.key(0), (6, 4, 4, 3)) * 2.0 + 1.0
    bn = protonet.SupportBatchNorm()
    params = {"scale": jnp.array([1.5, -0.5, 2.0]), "bias": jnp.array([0.1, 0.2, -0.3])}
    want = bn.apply({"params": params}, x, 4, method="affine")
    stats = x[:4].mean(axis=(0, 1, 2)), x[:4].var(axis=(0, 1, 2))
    got = bn.apply({"params": params}, *stats, method="from_moments")
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_linear_map_moments_are_the_mean_and_variance_of_the_map():
    """Patches with a large mean (the centring matters) and a low-rank part (a
    near-zero variance must not come out negative)."""
    k_p, k_k, k_b = jax.random.split(jax.random.key(0), 3)
    patches = jax.random.normal(k_p, (5, 6, 7, 9)) * 0.3 + 2.0
    kernel = jax.random.normal(k_k, (9, 4))
    kernel = kernel.at[:, 3].set(jnp.array([1.0, -1.0] + [0.0] * 7))
    patches = patches.at[..., 1].set(patches[..., 0])  # channel 3 sees zero variance
    bias = jax.random.normal(k_b, (4,))
    mean, var = jax.jit(protonet.linear_map_moments)(patches, kernel, bias)
    y = patches @ kernel + bias  # f32[5, 6, 7, 4]
    np.testing.assert_allclose(mean, y.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(var, y.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    assert float(var[3]) >= 0.0


def test_separable_conv3x3_is_a_depthwise_then_a_pointwise_convolution():
    x = jax.random.normal(jax.random.key(0), (2, 7, 5, 4))
    conv = protonet.SeparableConv3x3(6)
    params = conv.init(jax.random.key(1), x)["params"]
    params = {**params, "bias": jax.random.normal(jax.random.key(2), (6,))}
    depthwise = jax.lax.conv_general_dilated(  # lax's own grouped convolution
        x,
        params["depthwise"][:, :, None, :],
        (1, 1),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=4,
    )
    want = jnp.einsum("nhwc,co->nhwo", depthwise, params["kernel"]) + params["bias"]
    np.testing.assert_allclose(conv.apply({"params": params}, x), want, rtol=1e-5, atol=1e-5)


def test_separable_conv4_has_fewer_parameters_and_the_same_embedding_size():
    x = jnp.zeros((3, 28, 28, 1))
    dense = protonet.init_params(jax.random.key(0), protonet.Conv4(64))
    separable_model = protonet.Conv4(64, separable=True)
    separable = protonet.init_params(jax.random.key(0), separable_model)
    # layer 0: 9*64 + 64; layers 1-3: 9*64 + 64*64 + 64; four batch norms of 2*64
    assert protonet.num_params(separable) == 640 + 3 * 4736 + 4 * 128 == 15360
    assert protonet.num_params(dense) == 111936
    assert set(separable["Conv_1"]) == {"depthwise", "kernel", "bias"}
    assert separable["Conv_0"]["kernel"].shape == (3, 3, 1, 64)  # one input channel: full
    assert separable_model.apply({"params": separable}, x).shape == (3, 64)


def test_separable_kernels_are_projected_and_their_biases_left_unperturbed():
    params = protonet.init_params(jax.random.key(0), protonet.Conv4(8, separable=True))
    kernels, biases = protonet.conv_kernel_mask(params), protonet.conv_bias_mask(params)
    assert kernels["Conv_1"] == {"depthwise": False, "kernel": True, "bias": False}
    assert biases["Conv_1"] == {"depthwise": False, "kernel": False, "bias": True}
