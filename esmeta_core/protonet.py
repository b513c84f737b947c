"""Prototypical Networks (Snell et al. 2017, arXiv:1703.05175) with a Conv4 embedding.

An episode has ``way`` classes; each class's prototype is the mean embedding
of its support images, and a query is classified by a softmax over negative
squared Euclidean distances to the prototypes:

.. math::

   c_k = \\frac{1}{|S_k|} \\sum_{x \\in S_k} f_\\theta(x), \\qquad
   p(y = k \\mid x) = \\frac{\\exp(-\\lVert f_\\theta(x) - c_k \\rVert^2)}
                          {\\sum_{k'} \\exp(-\\lVert f_\\theta(x) - c_{k'} \\rVert^2)} .

**Batch norm uses support statistics.** Every batch-norm layer normalises with
the mean and variance of the *support* images' activations in that layer, in
training and at test time, under ES and under backprop alike. There are no
running averages (so ES needs no state besides the weights), queries never
influence each other (no transductive leakage), and an episode's queries can be
embedded in chunks with exactly the same result, which keeps the memory of a
forward pass flat in the number of queries.

**Feature-wise transformation (FWT).** For cross-domain training the embedding
takes an optional :class:`FeatureTransform`: after every batch norm the features
are scaled and shifted per channel, ``x * gamma + beta``, with ``gamma`` and
``beta`` drawn by :func:`sample_feature_transform` from hyperparameters
(Tseng et al. 2020, arXiv:2001.08735, eq. 1-2). It is passed in during training
only; evaluation never passes one, so a test forward pass is the plain Conv4.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# An episode is any ``(support, support_labels, query, query_labels)`` 4-tuple, such as
# :class:`esmeta_core.data.Episode`: the model reads it by position and imports nothing
# from the data part (see docs/ARCHITECTURE.md).
Episode = tuple[Any, Any, Any, Any]


class FeatureTransform(NamedTuple):
    """Per-layer, per-channel scale and shift after batch norm, each f32[depth, width]."""

    gamma: jax.Array
    beta: jax.Array


def init_fwt_hyperparams(
    depth: int, width: int, *, gamma: float = 0.3, beta: float = 0.5
) -> dict[str, jax.Array]:
    """FWT hyperparameters ``{"gamma": f32[depth, width], "beta": f32[depth, width]}``.

    The defaults are the initial *numbers* of Tseng et al.'s public code (``theta_gamma =
    0.3``, ``theta_beta = 0.5``), but not their spreads: that code's softplus is
    ``softplus(x, beta=100)``, nearly ``max(x, 0)``, so its initial standard deviations are
    0.30 and 0.50, while :func:`sample_feature_transform` uses the plain softplus and
    these defaults give 0.85 and 0.97. For a given spread pass :func:`fwt_theta` of it.
    """
    return {
        "gamma": jnp.full((depth, width), gamma, jnp.float32),
        "beta": jnp.full((depth, width), beta, jnp.float32),
    }


def fwt_theta(std: float) -> float:
    """The ``theta`` whose softplus is ``std`` (> 0): ``log(exp(std) - 1)``.

    >>> round(fwt_theta(0.5), 4), round(float(jax.nn.softplus(fwt_theta(0.5))), 4)
    (-0.4328, 0.5)
    """
    if not std > 0:
        raise ValueError(f"an FWT standard deviation must be positive, got {std!r}.")
    return float(math.log(math.expm1(std)))


def sample_feature_transform(key: jax.Array, hyper: dict[str, jax.Array]) -> FeatureTransform:
    """One draw of the FWT layers (Tseng et al. 2020, arXiv:2001.08735, eq. 1-2).

    .. math::

       \\gamma \\sim N(1, \\operatorname{softplus}(\\theta_\\gamma)^2), \\qquad
       \\beta \\sim N(0, \\operatorname{softplus}(\\theta_\\beta)^2),

    per layer and channel, one draw for the whole batch (as in the public code, which
    multiplies ``randn`` by ``softplus(theta)``: softplus is the standard deviation; theirs
    is ``softplus(x, beta=100)``, this one the plain softplus, see
    :func:`init_fwt_hyperparams`).
    Reparameterised, so the draw is differentiable in ``hyper`` for a fixed ``key``.

    Args:
      key: PRNG key of this draw.
      hyper: ``{"gamma": theta_gamma, "beta": theta_beta}``, each f32[depth, width].

    Returns:
      A :class:`FeatureTransform` of the same shapes.
    """
    k_gamma, k_beta = jax.random.split(key)
    theta_gamma, theta_beta = hyper["gamma"], hyper["beta"]
    eps_gamma = jax.random.normal(k_gamma, theta_gamma.shape, theta_gamma.dtype)
    eps_beta = jax.random.normal(k_beta, theta_beta.shape, theta_beta.dtype)
    return FeatureTransform(
        gamma=1.0 + eps_gamma * jax.nn.softplus(theta_gamma),
        beta=eps_beta * jax.nn.softplus(theta_beta),
    )


def shifted_3x3(x: jax.Array) -> list[jax.Array]:
    """The nine 3x3 ``SAME`` windows of ``x``, each f32[n, h, w, c], in row-major order.

    Window ``3 i + j`` is ``x`` shifted by ``(i - 1, j - 1)`` with zero padding, so a 3x3
    kernel ``k`` gives the convolution ``sum_ij window[3 i + j] * k[i, j]``.
    """
    _, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return [padded[:, i : i + h, j : j + w, :] for i in range(3) for j in range(3)]


class Conv3x3(nn.Module):
    """A 3x3 ``SAME`` convolution with ``nn.Conv``'s parameters and initialisation.

    Parameters ``kernel`` f32[3, 3, c_in, features] (LeCun normal) and ``bias``
    f32[features] (zeros), as ``nn.Conv(features, (3, 3), padding="SAME")`` has them.
    A single-channel input (Omniglot's first layer) is convolved as one matmul of its
    3x3 patches, f32[n, h, w, 9] @ f32[9, features]. The patches depend on the images
    only, so inside an ES population loop XLA computes them once (loop-invariant code
    motion) and each member pays only the matmul, where XLA's CPU convolution at one
    input channel costs each member a full convolution (``benchmarks/conv4_forward.py``
    measures the effect). Other inputs use ``lax.conv_general_dilated``.
    """

    features: int

    @nn.compact
    def weights(self, c_in: int) -> tuple[jax.Array, jax.Array]:
        """``kernel`` f32[3, 3, c_in, features] and ``bias`` f32[features]."""
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, c_in, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return kernel, bias

    def __call__(self, x: jax.Array) -> jax.Array:
        """f32[n, h, w, c_in] -> f32[n, h, w, features]."""
        c_in = x.shape[-1]
        kernel, bias = self.weights(c_in)
        if c_in == 1:  # [n, h, w, 9] patches @ [9, features]: one matmul
            y = image_patches(x) @ kernel.reshape(9, self.features)
        else:
            y = lax.conv_general_dilated(
                x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
        return y + bias


def image_patches(x: jax.Array) -> jax.Array:
    """The 3x3 ``SAME`` patches of one-channel images: f32[n, h, w, 1] -> f32[n, h, w, 9]."""
    return jnp.concatenate(shifted_3x3(x), -1)


def linear_map_moments(
    patches: jax.Array, kernel: jax.Array, bias: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and variance of ``patches @ kernel + bias``, from the patches' moments.

    .. math::  \\mu_c = \\bar p^\\top K_{:c} + b_c, \\qquad
               \\sigma^2_c = K_{:c}^\\top \\Sigma_p K_{:c},

    with ``p-bar`` and ``Sigma_p`` the mean and covariance of the patch vectors. Exact
    up to float rounding, and the output is never formed: inside an ES population loop
    the patch moments depend on the images only (XLA computes them once), so each member
    pays a 9x9 quadratic form per channel instead of a pass over its full-resolution map.

    Args:
      patches: f32[..., k], the rows whose statistics are wanted (the support's).
      kernel: f32[k, c]. bias: f32[c].

    Returns:
      ``(mean, var)``, each f32[c].
    """
    rows = patches.reshape(-1, patches.shape[-1])  # f32[rows, k]
    patch_mean = rows.mean(axis=0)  # f32[k]
    centred = rows - patch_mean
    patch_cov = centred.T @ centred / rows.shape[0]  # f32[k, k]
    var = jnp.einsum("kc,kl,lc->c", kernel, patch_cov, kernel)
    return patch_mean @ kernel + bias, jnp.maximum(var, 0.0)


class SeparableConv3x3(nn.Module):
    """A depthwise-separable 3x3 ``SAME`` convolution (Chollet 2017, arXiv:1610.02357).

    A 3x3 filter per input channel, ``depthwise`` f32[3, 3, c_in] (LeCun normal, fan-in
    9), then a 1x1 convolution mixing the channels, ``kernel`` f32[c_in, features]
    (LeCun normal) and ``bias`` f32[features] (zeros):

    .. math::  y_{n h w o} = \\sum_c K_{c o} \\sum_{i j} D_{i j c}\\, x_{n, h+i-1, w+j-1, c} + b_o .

    ``9 c_in + c_in features`` weights against ``9 c_in features`` for a full 3x3
    convolution: at width 64, 4,672 per layer against 36,864. An ES estimate's
    variance grows with the number of perturbed parameters (its cosine to the gradient
    is about ``sqrt(N / 2D)``), so fewer weights per layer buy more information per
    step (``Conv4(separable=True)``). The depthwise step is nine shifted
    multiply-adds, which XLA fuses into one pass on a CPU.
    """

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """f32[n, h, w, c_in] -> f32[n, h, w, features]."""
        c_in = x.shape[-1]
        depthwise = self.param(
            "depthwise",
            nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2),
            (3, 3, c_in),
        )
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (c_in, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        spatial = sum(
            window * d for window, d in zip(shifted_3x3(x), depthwise.reshape(9, c_in), strict=True)
        )  # f32[n, h, w, c_in]
        return spatial @ kernel + bias


class SupportBatchNorm(nn.Module):
    """Batch norm whose statistics come from the first ``stats_rows`` rows (the support)."""

    epsilon: float = 1e-5

    @nn.compact
    def from_moments(self, mean: jax.Array, var: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(multiplier, offset)``, each f32[c], for channels of this mean and variance.

        ``m = scale / sqrt(var + epsilon)`` and ``o = bias - mean * m``.
        """
        scale = self.param("scale", nn.initializers.ones, mean.shape)
        bias = self.param("bias", nn.initializers.zeros, mean.shape)
        multiplier = lax.rsqrt(var + self.epsilon) * scale
        return multiplier, bias - mean * multiplier

    def affine(self, x: jax.Array, stats_rows: int) -> tuple[jax.Array, jax.Array]:
        """The per-channel ``(multiplier, offset)``, each f32[c], of ``x * m + o``.

        With the mean and variance of ``x[:stats_rows]`` (f32[n_support, h, w, c]) per
        channel (see :meth:`from_moments`).
        """
        reference = x[:stats_rows]  # f32[n_support, h, w, c]
        return self.from_moments(reference.mean(axis=(0, 1, 2)), reference.var(axis=(0, 1, 2)))

    def __call__(self, x: jax.Array, stats_rows: int) -> jax.Array:
        """``(x - mean) / sqrt(var + epsilon) * scale + bias``, with support statistics."""
        multiplier, offset = self.affine(x, stats_rows)
        return x * multiplier + offset


class Conv4(nn.Module):
    """The Conv4 embedding: ``depth`` x [3x3 conv, batch norm, ReLU, 2x2 max-pool].

    With 28x28 inputs and ``width=64`` the embedding has 64 dimensions
    (28 -> 14 -> 7 -> 3 -> 1 pixels).

    Batch norm (and FWT) is a per-channel affine map ``x m + o``, and ReLU is
    monotone, so ``maxpool(relu(x m + o)) = relu(maxpool(x m) + o)`` exactly: the
    offset and the ReLU are applied to the 4x smaller pooled map. With the first
    layer of :class:`Conv3x3` this makes a training step of the ``main`` preset
    (Conv4-16) 1.6x faster on a CPU than with the textbook composition (``nn.Conv``,
    batch norm, ReLU, ``nn.max_pool``: ``benchmarks/reference_conv4.py``, timed by
    ``benchmarks/conv4_forward.py``; 0.22 -> 0.12 s per step in the committed runs),
    Conv4-32's about 1.06x (1.22x with the patch moments below), and a single forward
    pass not at all, with the same
    parameters and the same numbers up to float rounding (``tests/test_protonet.py``).

    The first layer is linear in its 3x3 image patches, so its batch-norm statistics
    come from the patches' mean and 9x9 covariance (:func:`linear_map_moments`) and its
    multiplier is folded into the kernel: each ES member forms one full-resolution map
    (the matmul) instead of also reading it back for the statistics. The ``long``
    preset's runs took 0.208 s per step before (``results/protonet/long-pop64/``) and 0.167 s
    after (``results/protonet/long-18500steps/``), from their ``metrics.jsonl``.

    ``separable=True`` makes every layer after the first a :class:`SeparableConv3x3`
    (the first has one input channel, where a full 3x3 convolution has only
    ``9 width`` weights): Conv4-64 then has 15,360 parameters instead of 111,936.

    """

    width: int = 64
    depth: int = 4
    separable: bool = False

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        *,
        stats_rows: int | None = None,
        transform: FeatureTransform | None = None,
    ) -> jax.Array:
        """Embeds images: f32[n, h, w, 1] -> f32[n, d].

        ``transform`` (training only): layer ``i``'s batch-norm output becomes
        ``x * transform.gamma[i] + transform.beta[i]`` (FWT, see the module docstring).
        """
        stats_rows = x.shape[0] if stats_rows is None else stats_rows
        if transform is not None and jnp.shape(transform.gamma) != (self.depth, self.width):
            raise ValueError(
                f"transform must be f32[depth, width] = [{self.depth}, {self.width}], "
                f"got gamma of shape {jnp.shape(transform.gamma)}."
            )
        for i in range(self.depth):
            features = self.width
            norm = SupportBatchNorm(name=f"SupportBatchNorm_{i}")
            if x.shape[-1] == 1:  # the images: batch norm from patch moments
                kernel, bias = Conv3x3(features, name=f"Conv_{i}").weights(1)
                kernel = kernel.reshape(9, features)
                patches = image_patches(x)  # f32[n, h, w, 9], the same for every member
                multiplier, offset = norm.from_moments(
                    *linear_map_moments(patches[:stats_rows], kernel, bias)
                )
                multiplier, offset = _transformed(multiplier, offset, transform, i)
                # maxpool(y m) with y m = patches @ (kernel m) + bias m
                pooled = max_pool_2x2(patches @ (kernel * multiplier)) + bias * multiplier
            else:
                conv = SeparableConv3x3 if self.separable and i > 0 else Conv3x3
                x = conv(features, name=f"Conv_{i}")(x)
                multiplier, offset = _transformed(*norm.affine(x, stats_rows), transform, i)
                pooled = max_pool_2x2(x * multiplier)
            x = nn.relu(pooled + offset)
        return x.reshape(x.shape[0], -1)


def _transformed(
    multiplier: jax.Array, offset: jax.Array, transform: FeatureTransform | None, layer: int
) -> tuple[jax.Array, jax.Array]:
    """Batch norm's ``(m, o)`` followed by FWT's ``x gamma + beta`` (if any), as one affine map."""
    if transform is None:
        return multiplier, offset
    gamma, beta = transform.gamma[layer], transform.beta[layer]
    return multiplier * gamma, offset * gamma + beta


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pool, stride 2, ``VALID`` (odd sizes drop the last row and column).

    f32[n, h, w, c] -> f32[n, h // 2, w // 2, c], as ``nn.max_pool(x, (2, 2), (2, 2))``.
    """
    n, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _leaf_mask(params: Any, leaf_name: str) -> Any:
    """True at every ``Conv_*/<leaf_name>`` leaf of a Conv4's parameters."""

    def matches(path, _):
        names = [getattr(p, "key", "") for p in path]
        return len(names) >= 2 and str(names[-2]).startswith("Conv") and names[-1] == leaf_name

    return jax.tree_util.tree_map_with_path(matches, params)


def conv_kernel_mask(params: Any) -> Any:
    """True at every ``Conv_*/kernel`` leaf: the batch-normed, scale-invariant kernels.

    A pytree of bools shaped like ``params`` (the mask of
    :func:`esmeta_core.optim.make_optimizer`'s kernel projection).
    """
    return _leaf_mask(params, "kernel")


def conv_bias_mask(params: Any) -> Any:
    """True at every ``Conv_*/bias`` leaf: a batch norm right after cancels them.

    A pytree of bools shaped like ``params``; its negation is the ``perturb`` mask of
    :func:`esmeta_core.es.es_grad_masked` when the conv biases are not perturbed.
    """
    return _leaf_mask(params, "bias")


def init_params(key: jax.Array, model: Conv4, image_size: int = 28) -> Any:
    """Initial Conv4 parameters (a pytree) for ``image_size`` x ``image_size`` images."""
    return model.init(key, jnp.zeros((2, image_size, image_size, 1)))["params"]


def num_params(params: Any) -> int:
    """Total number of scalars in a parameter pytree."""
    return sum(int(x.size) for x in jax.tree.leaves(params))


def prototypes(z_support: jax.Array, support_labels: jax.Array, way: int) -> jax.Array:
    """Class means of support embeddings: f32[n_support, d] -> f32[way, d]."""
    one_hot = jax.nn.one_hot(support_labels, way, dtype=z_support.dtype)  # [n_support, way]
    return (one_hot.T @ z_support) / one_hot.sum(axis=0)[:, None]


def squared_distances(z_query: jax.Array, protos: jax.Array) -> jax.Array:
    """f32[n_query, d], f32[way, d] -> f32[n_query, way] of squared Euclidean distances."""
    return (
        jnp.sum(z_query**2, axis=1, keepdims=True)
        - 2.0 * z_query @ protos.T
        + jnp.sum(protos**2, axis=1)[None, :]
    )


def _chunk_loss_and_correct(
    model, params, transform, support, support_labels, query, query_labels, way
):
    """Summed cross-entropy and number of correct answers over one chunk of queries."""
    n_support = support.shape[0]
    z = model.apply(
        {"params": params},
        jnp.concatenate([support, query]),
        stats_rows=n_support,
        transform=transform,
    )
    protos = prototypes(z[:n_support], support_labels, way)  # f32[way, d]
    logits = -squared_distances(z[n_support:], protos)  # f32[n_query_chunk, way]
    log_probs = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(log_probs, query_labels[:, None], axis=1).sum()
    correct = (jnp.argmax(logits, axis=1) == query_labels).sum()
    return nll, correct


def episode_loss_and_accuracy(
    model: Conv4,
    params: Any,
    episode: Episode,
    *,
    way: int,
    query_chunk: int | None = None,
    transform: FeatureTransform | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Mean query cross-entropy and accuracy of one episode.

    Args:
      model: the embedding.
      params: its parameters.
      episode: ``(support, support_labels, query, query_labels)`` without a batch
        axis (an :class:`esmeta_core.data.Episode`): f32[way * shot, h, w, 1],
        i32[way * shot], f32[way * query, h, w, 1], i32[way * query].
      way: number of classes in the episode (labels are ``0 .. way - 1``).
      query_chunk: embed the queries this many at a time (a divisor of the
        number of queries); the result is the same, and peak memory of a
        forward pass no longer grows with the number of queries.
      transform: FWT layers for this episode (training only; see :class:`Conv4`).

    Returns:
      ``(loss, accuracy)``, both f32[].
    """
    support, support_labels, query, query_labels = episode
    n_query = query.shape[0]
    chunk_fn = functools.partial(
        _chunk_loss_and_correct, model, params, transform, support, support_labels
    )
    if query_chunk is None or query_chunk >= n_query:
        nll, correct = chunk_fn(query, query_labels, way)
    else:
        if n_query % query_chunk:
            raise ValueError(f"query_chunk={query_chunk} must divide the {n_query} queries.")

        def add_chunk(i, totals):
            start = i * query_chunk  # slices in place: no reshaped copy of the queries
            q = lax.dynamic_slice_in_dim(query, start, query_chunk)
            y = lax.dynamic_slice_in_dim(query_labels, start, query_chunk)
            nll, correct = chunk_fn(q, y, way)
            return totals[0] + nll, totals[1] + correct

        zero = jnp.zeros((), jnp.float32)
        nll, correct = lax.fori_loop(0, n_query // query_chunk, add_chunk, (zero, zero))
    return nll / n_query, correct.astype(jnp.float32) / n_query


def episode_loss(
    model: Conv4,
    params: Any,
    episode: Episode,
    *,
    way: int,
    query_chunk: int | None = None,
    transform: FeatureTransform | None = None,
) -> jax.Array:
    """Mean query cross-entropy of one episode (the ES fitness and the backprop loss)."""
    return episode_loss_and_accuracy(
        model, params, episode, way=way, query_chunk=query_chunk, transform=transform
    )[0]


def episode_spec(way: int, shot: int, query: int, image_size: int = 28) -> Episode:
    """An episode of ``jax.ShapeDtypeStruct`` s, for compiling without data.

    >>> [x.shape for x in episode_spec(5, 1, 2)]
    [(5, 28, 28, 1), (5,), (10, 28, 28, 1), (10,)]
    """
    f32, i32 = jnp.float32, jnp.int32
    return (
        jax.ShapeDtypeStruct((way * shot, image_size, image_size, 1), f32),  # support
        jax.ShapeDtypeStruct((way * shot,), i32),  # support labels
        jax.ShapeDtypeStruct((way * query, image_size, image_size, 1), f32),  # query
        jax.ShapeDtypeStruct((way * query,), i32),  # query labels
    )
