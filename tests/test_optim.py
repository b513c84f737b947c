"""The optimizer: schedules that act within a run, the conv masks it is given, the projection."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from esmeta_core import configs, optim, protonet


@pytest.fixture(scope="module")
def conv4_params():
    return protonet.init_params(jax.random.key(0), protonet.Conv4(8))


def test_halving_never_acts_in_a_run_shorter_than_its_period_but_cosine_does():
    halving = optim.lr_schedule(3e-3, kind="halving", steps=1200, halving_every=2000)
    cosine = optim.lr_schedule(3e-3, kind="cosine", steps=1200, final_fraction=0.1)
    assert float(halving(1199)) == pytest.approx(3e-3)
    assert float(cosine(0)) == pytest.approx(3e-3)
    assert float(cosine(600)) == pytest.approx(3e-3 * (0.1 + 0.9 * 0.5), rel=1e-5)
    assert float(cosine(1200)) == pytest.approx(3e-4, rel=1e-5)


@pytest.mark.parametrize("kind", ["linear", "constant"], ids=["linear", "constant"])
def test_linear_and_constant_schedules_end_where_they_say(kind):
    schedule = optim.lr_schedule(1e-2, kind=kind, steps=100, final_fraction=0.2)
    assert float(schedule(100)) == pytest.approx(2e-3 if kind == "linear" else 1e-2, rel=1e-5)


def test_conv_masks_pick_the_four_kernels_and_the_four_biases(conv4_params):
    kernels = protonet.conv_kernel_mask(conv4_params)
    biases = protonet.conv_bias_mask(conv4_params)
    assert sum(jax.tree.leaves(kernels)) == 4 and sum(jax.tree.leaves(biases)) == 4
    for name in conv4_params:
        assert kernels[name].get("kernel", False) == name.startswith("Conv")
        assert biases[name]["bias"] == name.startswith("Conv")


def test_conv_bias_before_batch_norm_cannot_change_the_loss(conv4_params, omniglot_dir):
    """Why the biases need no noise: shifting them leaves the episode loss unchanged."""
    from esmeta_core.data import load_split, sample_episodes

    images = load_split("test", data_dir=omniglot_dir).images
    episode = jax.tree.map(
        lambda x: x[0], sample_episodes(images, seed=0, step=0, batch=1, way=5, shot=5, query=5)
    )
    model = protonet.Conv4(8)
    shifted = jax.tree.map(
        lambda p, b: p + 0.5 if b else p, conv4_params, protonet.conv_bias_mask(conv4_params)
    )
    before = protonet.episode_loss(model, conv4_params, episode, way=5)
    after = protonet.episode_loss(model, shifted, episode, way=5)
    np.testing.assert_allclose(float(before), float(after), rtol=1e-4)


def test_projection_puts_every_kernel_channel_on_the_unit_sphere(conv4_params):
    opt = optax.chain(optax.adam(0.1), optim.project_to_unit_channels(protonet.conv_kernel_mask))
    state = opt.init(conv4_params)
    grads = jax.tree.map(jnp.ones_like, conv4_params)
    updates, _ = opt.update(grads, state, conv4_params)
    new = optax.apply_updates(conv4_params, updates)
    for name, layer in new.items():
        if name.startswith("Conv"):
            norms = np.linalg.norm(
                np.asarray(layer["kernel"]).reshape(-1, layer["kernel"].shape[-1]), axis=0
            )
            np.testing.assert_allclose(norms, 1.0, 1e-5)
            # the bias is not projected: Adam's plain step
            np.testing.assert_allclose(
                np.asarray(layer["bias"] - conv4_params[name]["bias"]), -0.1, rtol=1e-4
            )


def test_unit_kernels_needs_a_kernel_mask(conv4_params):
    config = dataclasses.replace(configs.PRESETS["smoke"], unit_kernels=True)
    with pytest.raises(ValueError, match="kernel_mask"):
        optim.make_optimizer(config)
    mask = protonet.conv_kernel_mask(conv4_params)  # a pytree works as well as a callable
    by_tree = optim.make_optimizer(config, kernel_mask=mask)
    by_callable = optim.make_optimizer(config, kernel_mask=protonet.conv_kernel_mask)
    grads = jax.tree.map(jnp.ones_like, conv4_params)
    a, _ = by_tree.update(grads, by_tree.init(conv4_params), conv4_params)
    b, _ = by_callable.update(grads, by_callable.init(conv4_params), conv4_params)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize(
    "changes",
    [{}, {"unit_kernels": True}],
    ids=["adam", "adam+projection"],
)
def test_first_moment_is_adams_average_of_the_gradients_in_every_chain(conv4_params, changes):
    config = dataclasses.replace(configs.PRESETS["smoke"], adam_b1=0.99, **changes)
    opt = optim.make_optimizer(config, kernel_mask=protonet.conv_kernel_mask)
    state = opt.init(conv4_params)
    for mu in jax.tree.leaves(optim.first_moment(state)):
        np.testing.assert_array_equal(np.asarray(mu), 0.0)  # zeros before the first step
    grads = jax.tree.map(lambda p: jnp.full_like(p, 2.0), conv4_params)
    _, state = opt.update(grads, state, conv4_params)
    mu = optim.first_moment(state)
    assert jax.tree.structure(mu) == jax.tree.structure(conv4_params)
    for m in jax.tree.leaves(mu):
        np.testing.assert_allclose(np.asarray(m), (1 - 0.99) * 2.0, rtol=1e-6)  # no bias fix


def test_first_moment_of_an_optimizer_without_adam_is_an_error(conv4_params):
    with pytest.raises(ValueError, match="first moment"):
        optim.first_moment(optax.sgd(0.1).init(conv4_params))
