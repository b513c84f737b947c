"""VS-ML: a learning algorithm written as a weight-shared grid of tiny LSTMs.

Kirsch & Schmidhuber, "Meta Learning Backpropagation And Improving It"
(NeurIPS 2021, arXiv:2012.14905). A dense layer with ``n_in`` inputs and
``n_out`` outputs becomes an ``[n_in, n_out]`` grid of LSTM cells that all share
one small set of parameters (the *meta-parameters*). The cell at ``(i, j)``
plays the role of the weight ``w_ij``: its state is the weight, and its update
rule is the learning algorithm.

One tick of the layer:

.. math::

   (h_{ij}, c_{ij}) &\\leftarrow \\mathrm{LSTM}_\\phi\\big([\\overrightarrow{m}_i,
       \\overleftarrow{m}_j], (h_{ij}, c_{ij})\\big) \\\\
   \\overrightarrow{m}'_j &= \\tfrac{1}{n_{in}} \\textstyle\\sum_i h_{ij} W_f, \\qquad
   \\overleftarrow{m}'_i = \\tfrac{1}{n_{out}} \\textstyle\\sum_j h_{ij} W_b ,

where :math:`\\overrightarrow{m}_i` is the forward message of input unit ``i``
(channel 0 carries the input value) and :math:`\\overleftarrow{m}_j` the backward
message of output unit ``j`` (channel 0 carries the error signal). Messages
have ``message_size`` channels, cell states ``state_size`` numbers. The number of
meta-parameters does not depend on ``n_in`` or ``n_out``.

Deeper networks (``VSMLConfig.hidden``) stack such layers, all running the same
LSTM: each tick sweeps the layers bottom to top, layer ``k`` reading the forward
messages of layer ``k - 1`` (all channels) and the backward messages that layer
``k + 1`` sent on the previous tick.

Online learning (batch size 1): for each example the layer first *predicts*
(ticks with the input and a zero backward message; the logits are channel 0 of
the forward messages), then *learns* (ticks with the input and the error
``softmax(logits) - onehot(y)`` as the backward message). The fitness to
minimise is the mean online cross-entropy of the predictions.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class VSMLConfig(NamedTuple):
    """Sizes of the VS-ML network.

    ``message_size`` channels per message, ``state_size`` numbers per LSTM cell,
    ``ticks`` micro-ticks per phase, and the widths of ``hidden`` VS-ML layers
    between the inputs and the outputs (``()``: one layer). Every layer runs the
    same shared LSTM.
    """

    message_size: int = 8
    state_size: int = 16
    ticks: int = 1
    hidden: tuple[int, ...] = ()


class VSMLState(NamedTuple):
    """The layer's fast state: h, c of f32[n_in, n_out, state_size] (the 'weights')."""

    h: jax.Array
    c: jax.Array


def validate_config(config: VSMLConfig) -> None:
    """Raises ``ValueError`` naming the field and its allowed range."""
    if config.message_size < 2:
        raise ValueError(
            f"message_size must be >= 2 (channel 0 carries values, the rest are learned), "
            f"got {config.message_size}."
        )
    if config.state_size < 1:
        raise ValueError(f"state_size must be >= 1, got {config.state_size}.")
    if config.ticks < 1:
        raise ValueError(f"ticks (micro-ticks per phase) must be >= 1, got {config.ticks}.")
    if any(width < 1 for width in config.hidden):
        raise ValueError(f"hidden layer widths must be >= 1, got {config.hidden}.")


def init_meta_params(key: jax.Array, config: VSMLConfig | None = None) -> dict[str, jax.Array]:
    """The shared LSTM parameters: a few thousand numbers, whatever the layer size."""
    config = VSMLConfig() if config is None else config
    validate_config(config)
    m, s = config.message_size, config.state_size
    k_lstm, k_f, k_b = jax.random.split(key, 3)
    bias = jnp.zeros(4 * s).at[s : 2 * s].set(1.0)  # forget gates start open
    return {
        "lstm_w": jax.random.normal(k_lstm, (2 * m + s, 4 * s)) / jnp.sqrt(2 * m + s),
        "lstm_b": bias,
        "fwd_w": jax.random.normal(k_f, (s, m)) / jnp.sqrt(s),
        "bwd_w": jax.random.normal(k_b, (s, m)) / jnp.sqrt(s),
        "init_c_scale": jnp.float32(0.5),  # per-episode random initial states
    }


def num_meta_params(meta: Any) -> int:
    return sum(int(jnp.size(x)) for x in jax.tree.leaves(meta))


def init_state(key: jax.Array, meta: dict, n_in: int, n_out: int, config: VSMLConfig) -> VSMLState:
    """Fresh fast state for one episode; ``c`` is random, like a random weight initialisation."""
    shape = (n_in, n_out, config.state_size)
    dtype = meta["lstm_w"].dtype
    c = meta["init_c_scale"] * jax.random.normal(key, shape, dtype)
    return VSMLState(h=jnp.zeros(shape, dtype), c=c)


def lstm_cell(meta: dict, state: VSMLState, inputs: jax.Array) -> VSMLState:
    """One LSTM step for every cell: inputs f32[..., 2m] -> new (h, c) f32[..., s]."""
    z = jnp.concatenate([inputs, state.h], axis=-1) @ meta["lstm_w"] + meta["lstm_b"]
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * state.c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return VSMLState(h, c)


def tick(
    meta: dict, state: VSMLState, forward_in: jax.Array, backward_in: jax.Array
) -> tuple[VSMLState, jax.Array, jax.Array]:
    """One tick of the layer.

    Args:
      forward_in: f32[n_in, m], messages from the input units.
      backward_in: f32[n_out, m], messages from the output units.

    Returns:
      ``(state, forward_out f32[n_out, m], backward_out f32[n_in, m])``.
    """
    n_in, n_out = state.h.shape[:2]
    inputs = jnp.concatenate(
        [
            jnp.broadcast_to(forward_in[:, None, :], (n_in, n_out, forward_in.shape[-1])),
            jnp.broadcast_to(backward_in[None, :, :], (n_in, n_out, backward_in.shape[-1])),
        ],
        axis=-1,
    )  # f32[n_in, n_out, 2m]
    state = lstm_cell(meta, state, inputs)
    forward_out = jnp.mean(state.h @ meta["fwd_w"], axis=0)  # f32[n_out, m]
    backward_out = jnp.mean(state.h @ meta["bwd_w"], axis=1)  # f32[n_in, m]
    return state, forward_out, backward_out


def _channel0(values: jax.Array, m: int) -> jax.Array:
    """Puts f32[n] values in channel 0 of f32[n, m] messages."""
    return jnp.zeros((values.shape[0], m), values.dtype).at[:, 0].set(values)


def output_error(logits: jax.Array, label: jax.Array, num_classes: int) -> jax.Array:
    """The backward signal: d cross-entropy / d logits = ``softmax(logits) - onehot(label)``."""
    return jax.nn.softmax(logits) - jax.nn.one_hot(label, num_classes, dtype=logits.dtype)


def online_logits(
    meta: dict,
    key: jax.Array,
    inputs: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    config: VSMLConfig | None = None,
) -> jax.Array:
    """Runs one online-learning episode; returns the predictions made along the way.

    For each example the layer predicts (ticks with the input and a zero backward
    message), then learns (ticks with the input and the error
    ``softmax(logits) - onehot(y)`` as the backward message).

    Args:
      inputs: f32[T, n_in], one example per step.
      labels: i32[T].

    Returns:
      logits f32[T, num_classes], each computed *before* its label was shown.
    """
    config = VSMLConfig() if config is None else config
    m = config.message_size
    widths = (inputs.shape[1], *config.hidden, num_classes)
    # Layer k's cells start from init_state; layer 0 uses `key`, deeper ones fold_in(key, k).
    states = tuple(
        init_state(key if k == 0 else jax.random.fold_in(key, k), meta, n_in, n_out, config)
        for k, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:], strict=True))
    )
    # backward messages between layers, from the previous tick: into layer k from k + 1
    between = tuple(jnp.zeros((width, m), inputs.dtype) for width in config.hidden)
    zero_back = jnp.zeros((num_classes, m), inputs.dtype)

    def network_tick(carry, forward_in, backward_in):
        """One tick of every layer, bottom to top; the top layer reads ``backward_in``."""
        states, between = carry
        new_states, backward_out = [], []
        for k, layer_state in enumerate(states):
            back = backward_in if k == len(states) - 1 else between[k]
            new_state, forward_in, back_out = tick(meta, layer_state, forward_in, back)
            new_states.append(new_state)
            backward_out.append(back_out)
        return (tuple(new_states), tuple(backward_out[1:])), forward_in

    def run_ticks(carry, forward_in, backward_in):
        def body(_, carry_out):
            carry, _ = carry_out
            return network_tick(carry, forward_in, backward_in)

        return lax.fori_loop(0, config.ticks, body, (carry, zero_back))

    def step(carry, example):
        x, y = example
        forward_in = _channel0(x, m)
        carry, out = run_ticks(carry, forward_in, zero_back)  # predict
        logits = out[:, 0]
        error = output_error(logits, y, num_classes)
        carry, _ = run_ticks(carry, forward_in, _channel0(error, m))  # learn
        return carry, logits

    _, logits = lax.scan(step, (states, between), (inputs, labels))
    return logits


def online_metrics(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-step cross-entropy and correctness of online predictions f32[T, C], i32[T]."""
    log_probs = jax.nn.log_softmax(logits)
    losses = -jnp.take_along_axis(log_probs, labels[:, None], axis=1)[:, 0]
    return losses, (jnp.argmax(logits, axis=1) == labels).astype(logits.dtype)


def online_episode(
    meta: dict,
    key: jax.Array,
    inputs: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    config: VSMLConfig | None = None,
) -> tuple[jax.Array, jax.Array]:
    """``online_logits`` scored: ``(losses f32[T], correct f32[T])``, the fitness to minimise."""
    logits = online_logits(meta, key, inputs, labels, num_classes=num_classes, config=config)
    return online_metrics(logits, labels)


def online_sgd_logits(
    inputs: jax.Array, labels: jax.Array, *, num_classes: int, lr: float | jax.Array
) -> jax.Array:
    """The reference learner: online SGD on ``logits = mean_i x_i w_ij`` from ``w = 0``.

    Each step predicts, then applies ``w_ij -= lr x_i e_j`` with the cross-entropy
    error ``e = softmax(logits) - onehot(y)``: the update backprop computes for
    this layer (scaled by ``n_in``). Same interface and parametrisation as the
    VS-ML layer, so the two can be compared step by step.

    Returns:
      logits f32[T, num_classes], each computed before its label was shown.
    """
    n_in = inputs.shape[1]

    def step(w, example):
        x, y = example
        logits = x @ w / n_in
        return w - lr * jnp.outer(x, output_error(logits, y, num_classes)), logits

    _, logits = lax.scan(step, jnp.zeros((n_in, num_classes), inputs.dtype), (inputs, labels))
    return logits


def imitation_loss(
    meta: dict,
    key: jax.Array,
    inputs: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    lr: float | jax.Array,
    config: VSMLConfig | None = None,
) -> jax.Array:
    """Meta-loss for learning "backprop in forward mode" by regression.

    Runs the VS-ML layer and online SGD (``online_sgd_logits``) on the same
    stream, each driven by its own errors, and returns the mean squared
    difference of their predictions, a scalar. At zero the meta-parameters
    implement online SGD with learning rate ``lr``.
    """
    vsml_logits = online_logits(meta, key, inputs, labels, num_classes=num_classes, config=config)
    sgd_logits = online_sgd_logits(inputs, labels, num_classes=num_classes, lr=lr)
    return jnp.mean((vsml_logits - sgd_logits) ** 2)


def check_episode_length(length: int, available: int) -> None:
    """Raises ``ValueError`` when an episode asks for more examples than the data has."""
    if length < 1 or length > available:
        raise ValueError(
            f"episode length {length} is not possible: the data has {available} examples; "
            f"choose 1 <= length <= {available}."
        )


def sgd_handset_meta_params(
    *, lr: float, config: VSMLConfig | None = None, a: float = 1e-2, b: float = 1e-3
) -> dict[str, jax.Array]:
    """Hand-set meta-parameters with which the VS-ML layer runs online SGD.

    Four LSTM units per cell hold the weight ``w_ij`` in the sum of two cell
    states. The input gates (driven by ``+-a x_i``) and the candidate values
    (driven by ``-+b e_j``) add ``-(a b / 2) x_i e_j`` to that sum per learning
    tick, and the output gates (``+-a x_i``) read out ``(a x_i / 2) w``; in the
    small-signal regime the layer computes ``logits_j = mean_i x_i w_ij`` and
    updates ``w_ij -= lr x_i e_j``, the gradient step of that layer under
    cross-entropy (scaled by ``n_in``). It shows that the architecture can
    express backprop; meta-training has to find such (or better) rules.
    """
    config = VSMLConfig() if config is None else config
    m, s = config.message_size, config.state_size
    if s < 4:
        raise ValueError("the hand-set SGD cell needs state_size >= 4")
    w = jnp.zeros((2 * m + s, 4 * s))
    x_row, e_row = 0, m  # channel 0 of the forward and of the backward message
    gate = {"i": 0, "f": s, "g": 2 * s, "o": 3 * s}
    for unit, (i_sign, g_sign, o_sign) in enumerate(
        ((1, -1, 1), (1, -1, -1), (-1, 1, 1), (-1, 1, -1))
    ):
        w = w.at[x_row, gate["i"] + unit].set(i_sign * a)
        w = w.at[e_row, gate["g"] + unit].set(g_sign * b)
        w = w.at[x_row, gate["o"] + unit].set(o_sign * a)
    bias = jnp.zeros(4 * s).at[gate["f"] : gate["f"] + s].set(30.0)  # forget gate = 1
    readout = 4.0 * lr / (a * a * b)  # (a x / 2) * (sum of states) * readout = x * w
    fwd_w = jnp.zeros((s, m)).at[:4, 0].set(readout * jnp.array([1.0, -1.0, 1.0, -1.0]))
    return {
        "lstm_w": w,
        "lstm_b": bias,
        "fwd_w": fwd_w,
        "bwd_w": jnp.zeros((s, m)),
        "init_c_scale": jnp.float32(0.0),
    }


def sample_task(
    rng, features, labels, *, num_classes: int, length: int, n_in: int
) -> tuple[jax.Array, jax.Array]:
    """One online-learning task from a labelled data set (NumPy in, arrays out).

    Picks ``num_classes`` classes at random and relabels them ``0..num_classes-1``
    in random order, draws ``length`` of their examples, and projects the
    features to ``n_in`` dimensions with a random Gaussian matrix (then
    standardises them), so that a learned learner cannot memorise one data set.

    Args:
      rng: a ``numpy.random.Generator``.
      features: f32[n, d]; labels: int[n].

    Returns:
      ``(inputs f32[length, n_in], labels i32[length])``.
    """
    import numpy as np

    classes = rng.choice(np.unique(labels), size=num_classes, replace=False)
    pool = np.flatnonzero(np.isin(labels, classes))
    check_episode_length(length, len(pool))
    picks = rng.choice(pool, size=length, replace=False)
    relabel = {c: k for k, c in enumerate(classes)}
    y = np.array([relabel[c] for c in labels[picks]], np.int32)
    projection = rng.normal(size=(features.shape[1], n_in)) / np.sqrt(features.shape[1])
    x = features[picks] @ projection
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    return jnp.asarray(x, jnp.float32), jnp.asarray(y)
