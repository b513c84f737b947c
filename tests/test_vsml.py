"""VS-ML: weight sharing, a hand-set cell that is SGD, ES meta-training, devices, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from esmeta_core import es, vsml
from esmeta_core.data import tasks
from esmeta_core.data.digits import load_digits


def test_same_meta_params_run_layers_of_any_size():
    config = vsml.VSMLConfig()
    meta = vsml.init_meta_params(jax.random.key(0), config)
    count = vsml.num_meta_params(meta)
    for n_in, n_out in ((16, 5), (64, 10)):
        x = jnp.ones((7, n_in))
        y = jnp.arange(7) % n_out
        losses, correct = vsml.online_episode(
            meta, jax.random.key(1), x, y, num_classes=n_out, config=config
        )
        assert losses.shape == correct.shape == (7,) and bool(jnp.isfinite(losses).all())
    assert count == vsml.num_meta_params(vsml.init_meta_params(jax.random.key(5), config))
    assert count < 5000


def test_same_meta_params_run_networks_with_hidden_layers():
    # legacy init: under the reference init the input gates start almost shut
    # (sigmoid(-5)), so the inputs move the logits of a deep net by ~1e-7 only
    meta = vsml.init_meta_params(jax.random.key(0), vsml.VSMLConfig(hidden=(8,), init="legacy"))
    for n_in, hidden, n_out in ((16, (8,), 5), (64, (32, 16), 10)):
        config = vsml.VSMLConfig(hidden=hidden, ticks=2, init="legacy")
        x = jax.random.normal(jax.random.key(2), (6, n_in))
        y = jnp.arange(6) % n_out
        logits = vsml.online_logits(meta, jax.random.key(1), x, y, num_classes=n_out, config=config)
        assert logits.shape == (6, n_out) and bool(jnp.isfinite(logits).all())
        # the inputs reach the outputs through every layer
        other = vsml.online_logits(meta, jax.random.key(1), -x, y, num_classes=n_out, config=config)
        assert float(jnp.abs(other - logits).max()) > 1e-6


def _online_sgd(xs, ys, n_out, lr):
    """Online SGD on logits = mean_i x_i w_ij (w starts at 0), loss before each update."""
    w = np.zeros((xs.shape[1], n_out))
    losses = []
    for x, y in zip(np.asarray(xs, np.float64), np.asarray(ys), strict=True):
        logits = x @ w / len(x)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        losses.append(-np.log(p[y]))
        error = p.copy()
        error[y] -= 1.0
        w -= lr * np.outer(x, error)
    return np.array(losses)


def _digit_stream(length: int = 60):
    data = load_digits(seed=0)
    xs = jnp.asarray(data.train_x[:length].reshape(length, -1)[:, ::4])  # 16 real pixel inputs
    return xs, jnp.asarray(data.train_y[:length] % 5)


@pytest.mark.parametrize("lr", [0.05, 0.5], ids=["lr0.05", "lr0.5"])
def test_handset_lstm_reproduces_online_sgd(lr):
    xs, ys = _digit_stream()
    meta = vsml.sgd_handset_meta_params(lr=lr)
    losses, _ = vsml.online_episode(meta, jax.random.key(0), xs, ys, num_classes=5)
    reference = _online_sgd(xs, ys, 5, lr)
    np.testing.assert_allclose(losses, reference, rtol=2e-3, atol=2e-4)
    # It really learns: the losses move far more than the two differ.
    assert np.abs(reference - np.log(5)).max() > 10 * np.abs(losses - reference).max()


def _digit_tasks(length: int, count: int = 4):
    """``count`` 3-way digits tasks of 8 inputs: f32[count, length, 8], i32[count, length]."""
    data = load_digits(seed=0)
    features = data.train_x.reshape(len(data.train_x), -1)
    rng = np.random.default_rng(0)
    xs, ys = tasks.task_batch(rng, (features, data.train_y), count, way=3, length=length, n_in=8)
    return jnp.asarray(xs), jnp.asarray(ys)


def test_online_sgd_logits_are_online_sgd():
    xs, ys = _digit_stream()
    logits = vsml.online_sgd_logits(xs, ys, num_classes=5, lr=0.5)
    losses, _ = vsml.online_metrics(logits, ys)
    np.testing.assert_allclose(losses, _online_sgd(xs, ys, 5, 0.5), rtol=1e-5, atol=1e-6)


def test_imitation_loss_is_zero_only_for_a_cell_that_runs_sgd():
    xs, ys = _digit_stream()
    handset = vsml.sgd_handset_meta_params(lr=0.5)
    random = vsml.init_meta_params(jax.random.key(0))

    def loss(meta, lr):
        return float(vsml.imitation_loss(meta, jax.random.key(1), xs, ys, num_classes=5, lr=lr))

    assert loss(handset, 0.5) < 1e-5
    assert loss(handset, 2.0) > 100 * loss(
        handset, 0.5
    )  # a different learning rate is not imitated
    assert loss(random, 0.5) > 100 * loss(handset, 0.5)


def test_regression_steps_lower_the_imitation_loss():
    xs, ys = _digit_tasks(length=20)
    config = vsml.VSMLConfig(message_size=4, state_size=8)

    def meta_loss(meta):
        return jax.vmap(
            lambda x, y: vsml.imitation_loss(
                meta, jax.random.key(1), x, y, num_classes=3, lr=1.0, config=config
            )
        )(xs, ys).mean()

    meta = vsml.init_meta_params(jax.random.key(0), config)
    optimizer = optax.adam(3e-2)
    state = optimizer.init(meta)
    step = jax.jit(jax.value_and_grad(meta_loss))
    start, _ = step(meta)
    for _ in range(80):  # the reference init starts slower than the legacy one (40 steps)
        _, grads = step(meta)
        updates, state = optimizer.update(grads, state)
        meta = optax.apply_updates(meta, updates)
    assert float(meta_loss(meta)) < 0.5 * float(start)


def test_online_mlp_sgd_first_step_is_the_backprop_update():
    x = jax.random.normal(jax.random.key(0), (3, 6))
    y = jnp.array([2, 0, 1])
    weights = vsml.init_mlp_weights(jax.random.key(1), (6, 4, 3))
    lr = 0.3
    logits = vsml.online_mlp_sgd_logits(x, y, weights, lr=lr)
    # by hand: forward, then d cross-entropy / d W_k by the chain rule
    w1, w2 = (np.asarray(w, np.float64) for w in weights)
    x0 = np.asarray(x[0], np.float64)
    a = np.tanh(x0 @ w1)
    z = a @ w2
    np.testing.assert_allclose(logits[0], z, rtol=1e-5, atol=1e-6)
    p = np.exp(z - z.max())
    p /= p.sum()
    delta2 = p - np.eye(3)[2]
    delta1 = (w2 @ delta2) * (1 - a**2)
    w1, w2 = w1 - lr * np.outer(x0, delta1), w2 - lr * np.outer(a, delta2)
    x1 = np.asarray(x[1], np.float64)
    np.testing.assert_allclose(logits[1], np.tanh(x1 @ w1) @ w2, rtol=1e-4, atol=1e-5)

    # the same step by jax.grad of the cross-entropy on the first example
    def loss(ws):
        return -jax.nn.log_softmax(jnp.tanh(x[0] @ ws[0]) @ ws[1])[y[0]]

    grads = jax.grad(loss)(weights)
    stepped = tuple(w - lr * g for w, g in zip(weights, grads, strict=True))
    np.testing.assert_allclose(logits[1], jnp.tanh(x[1] @ stepped[0]) @ stepped[1], rtol=1e-5)


def test_online_mlp_sgd_without_hidden_layers_is_online_sgd():
    xs, ys = _digit_stream()
    n_in = xs.shape[1]
    deep = vsml.online_mlp_sgd_logits(xs, ys, (jnp.zeros((n_in, 5)),), lr=0.5 / n_in)
    np.testing.assert_allclose(
        deep, vsml.online_sgd_logits(xs, ys, num_classes=5, lr=0.5), rtol=1e-4, atol=1e-5
    )


def test_mlp_teacher_starts_from_the_vsml_networks_initial_state():
    config = vsml.VSMLConfig(hidden=(4,))
    meta = vsml.init_meta_params(jax.random.key(0), config)
    net = vsml.init_network(jax.random.key(1), meta, 6, 3, config)
    weights = vsml.initial_weights(net)
    assert [w.shape for w in weights] == [(6, 4), (4, 3)]
    np.testing.assert_array_equal(weights[1], net.layers[1].c[..., 0])
    assert float(jnp.abs(weights[0]).min()) > 0  # unit 0 is in the random half


def test_single_layer_imitation_loss_is_unchanged():
    xs, ys = _digit_stream()
    meta = vsml.init_meta_params(jax.random.key(0))
    logits = vsml.online_logits(meta, jax.random.key(1), xs, ys, num_classes=5)
    expected = jnp.mean((logits - vsml.online_sgd_logits(xs, ys, num_classes=5, lr=0.5)) ** 2)
    got = vsml.imitation_loss(meta, jax.random.key(1), xs, ys, num_classes=5, lr=0.5)
    assert float(got) == float(expected)


def test_regression_steps_lower_the_multi_layer_imitation_loss():
    xs, ys = _digit_tasks(length=20)
    config = vsml.VSMLConfig(message_size=4, state_size=8, hidden=(4,))

    def meta_loss(meta):
        return jax.vmap(
            lambda x, y: vsml.imitation_loss(
                meta, jax.random.key(1), x, y, num_classes=3, lr=0.1, config=config
            )
        )(xs, ys).mean()

    meta = vsml.init_meta_params(jax.random.key(0), config)
    step = jax.jit(jax.value_and_grad(meta_loss))
    start, grads = step(meta)
    # the teacher is held fixed: its weights come from the state, without gradient
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
    assert float(jnp.abs(grads["bwd_w"]).max()) > 0  # the hidden layer's messages matter
    optimizer = optax.adam(0.1)  # at 3e-2 the loss sits on a plateau for these 40 steps
    state = optimizer.init(meta)
    for _ in range(40):
        _, grads = step(meta)
        updates, state = optimizer.update(grads, state)
        meta = optax.apply_updates(meta, updates)
    assert float(meta_loss(meta)) < 0.6 * float(start)  # 0.42 -> 0.17 when written


def test_few_es_meta_steps_lower_the_meta_loss():
    xs, ys = _digit_tasks(length=30)
    config = vsml.VSMLConfig(message_size=4, state_size=8)

    def meta_loss(meta, xs, ys):
        per_task = jax.vmap(
            lambda x, y: vsml.online_episode(
                meta, jax.random.key(1), x, y, num_classes=3, config=config
            )[0].mean()
        )(xs, ys)
        return per_task.mean()

    meta = vsml.init_meta_params(jax.random.key(0), config)
    grad_fn = es.make_es_grad(
        meta_loss, config=es.ESConfig(population=64, sigma=0.05, chunk_size=8)
    )
    optimizer = optax.adam(0.05)
    state = optimizer.init(meta)
    start = float(meta_loss(meta, xs, ys))
    for step in range(20):
        grads, _ = grad_fn(meta, jax.random.fold_in(jax.random.key(3), step), xs, ys)
        updates, state = optimizer.update(grads, state)
        meta = optax.apply_updates(meta, updates)
    assert float(meta_loss(meta, xs, ys)) < start - 0.02


def test_same_meta_gradient_on_1_and_8_devices(tmp_path):
    out = tmp_path / "vsml.npz"
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("vsml_worker.py")), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    grads = np.load(out)
    names = {k.split("/", 1)[1] for k in grads.files}
    for name in names:
        np.testing.assert_allclose(grads[f"8/{name}"], grads[f"1/{name}"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "config,match",
    [
        (vsml.VSMLConfig(message_size=1), "message_size must be >= 2"),
        (vsml.VSMLConfig(ticks=0), "ticks"),
        (vsml.VSMLConfig(state_size=0), "state_size must be >= 1"),
        (vsml.VSMLConfig(hidden=(8, 0)), "hidden layer widths must be >= 1"),
        (vsml.VSMLConfig(init="zeros"), "init must be one of"),
        (vsml.VSMLConfig(sweep="sideways"), "sweep must be one of"),
    ],
    ids=[
        "message-size-1",
        "zero-ticks",
        "zero-state",
        "empty-hidden-layer",
        "unknown-init",
        "unknown-sweep",
    ],  # fmt: skip
)
def test_bad_config_is_rejected(config, match):
    with pytest.raises(ValueError, match=match):
        vsml.validate_config(config)


def test_reference_init_has_the_reference_gate_biases_and_weight_scale():
    config = vsml.VSMLConfig()
    m, s = config.message_size, config.state_size
    meta = vsml.init_meta_params(jax.random.key(0), config)
    bias = np.asarray(meta["lstm_b"])
    np.testing.assert_array_equal(bias[:s], -5.0)  # input gates: written slowly
    np.testing.assert_array_equal(bias[s : 2 * s], 5.0)  # forget gates: barely forget
    np.testing.assert_array_equal(bias[2 * s :], 0.0)
    w = np.asarray(meta["lstm_w"])
    std = 1 / np.sqrt(2 * m + s)
    assert abs(w.std() / std - 1) < 0.1  # truncated normal rescaled to std 1/sqrt(fan_in)
    assert np.abs(w).max() <= 2 * std / 0.87962566 + 1e-6  # cut at 2 before the rescale
    # a single layer's backward messages leave the network: nothing to perturb there
    assert set(meta) == {"lstm_w", "lstm_b", "fwd_w"}
    assert "bwd_w" in vsml.init_meta_params(jax.random.key(0), config._replace(hidden=(4,)))


def test_reference_initial_state_is_random_on_half_the_units_with_std_one_over_sqrt_n_in():
    config = vsml.VSMLConfig()
    meta = vsml.init_meta_params(jax.random.key(0), config)
    n_in, n_out, half = 64, 10, config.state_size // 2
    state = vsml.init_state(jax.random.key(1), meta, n_in, n_out, config)
    c = np.asarray(state.c)
    np.testing.assert_array_equal(np.asarray(state.h), 0.0)
    np.testing.assert_array_equal(c[..., half:], 0.0)
    assert abs(c[..., :half].std() * np.sqrt(n_in) - 1) < 0.05
    assert np.abs(c).max() <= 2 / np.sqrt(n_in) / 0.87962566 + 1e-6
    assert abs(c[..., :half].mean()) < 0.01
    other = vsml.init_state(jax.random.key(2), meta, n_in, n_out, config)
    assert not np.array_equal(np.asarray(other.c), c)  # a fresh draw per episode


def test_legacy_init_keeps_the_first_choice():
    config = vsml.VSMLConfig(init="legacy")
    s = config.state_size
    meta = vsml.init_meta_params(jax.random.key(0), config)
    np.testing.assert_array_equal(np.asarray(meta["lstm_b"][s : 2 * s]), 1.0)
    np.testing.assert_array_equal(np.asarray(meta["lstm_b"][:s]), 0.0)
    assert float(meta["init_c_scale"]) == 0.5 and "bwd_w" in meta
    c = np.asarray(vsml.init_state(jax.random.key(1), meta, 64, 10, config).c)
    assert abs(c.std() / 0.5 - 1) < 0.05 and (c[..., s // 2 :] != 0).all()


def test_reference_init_remembers_the_first_example_far_longer_than_legacy():
    """Perturbing example 0 moves the logits at step 49: the reference's slow memory."""
    x = jax.random.normal(jax.random.key(3), (50, 16))
    y = jnp.arange(50) % 5
    bumped = x.at[0].add(1.0)
    effect = {}
    for init in vsml.INITS:
        config = vsml.VSMLConfig(init=init)
        meta = vsml.init_meta_params(jax.random.key(0), config)

        def last(inputs, meta=meta, config=config):
            logits = vsml.online_logits(
                meta, jax.random.key(1), inputs, y, num_classes=5, config=config
            )
            return logits[-1]

        effect[init] = float(jnp.abs(last(bumped) - last(x)).max())
    assert effect["reference"] > 100 * effect["legacy"], effect


def _two_layer_after_one_example(sweep: str, label: int) -> np.ndarray:
    config = vsml.VSMLConfig(hidden=(6,), sweep=sweep)
    meta = vsml.init_meta_params(jax.random.key(0), config)
    net = vsml.init_network(jax.random.key(1), meta, 8, 3, config)
    x = jax.random.normal(jax.random.key(2), (8,))
    net, logits = vsml.predict(meta, net, x, num_classes=3, config=config)
    error = vsml.output_error(logits, jnp.int32(label), 3)
    net = vsml.learn(meta, net, x, error, config=config)
    return np.asarray(net.layers[0].c)


def test_error_of_an_example_reaches_layer_0_in_its_own_learn_phase():
    # top-down sweep: layer 0's state after the learn phase depends on the label
    a, b = (_two_layer_after_one_example("top_down", label) for label in (0, 2))
    assert np.abs(a - b).max() > 1e-6
    # the old bottom-up sweep: layer 0 hears of the error only on the next tick
    a, b = (_two_layer_after_one_example("bottom_up", label) for label in (0, 2))
    np.testing.assert_array_equal(a, b)


def test_network_with_hidden_layers_needs_backward_weights():
    meta = vsml.init_meta_params(jax.random.key(0))  # a single layer's: no bwd_w
    with pytest.raises(ValueError, match="needs meta\\['bwd_w'\\]"):
        vsml.online_logits(
            meta, jax.random.key(1), jnp.ones((3, 4)), jnp.zeros(3, jnp.int32),
            num_classes=2, config=vsml.VSMLConfig(hidden=(3,)),
        )  # fmt: skip
