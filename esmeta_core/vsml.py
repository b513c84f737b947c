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
LSTM. The predict phase sweeps the layers bottom to top, layer ``k`` reading the
forward messages of layer ``k - 1`` (all channels); the learn phase sweeps them
top down, layer ``k`` reading the backward messages layer ``k + 1`` has just sent,
so the error of an example reaches the first layer within its own learn phase
(the reference's ``backward_pass``; ``sweep="bottom_up"`` keeps this project's
first, one-tick-late order).

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
    same shared LSTM. ``init`` picks the initialisation (``INITS``), ``sweep`` the
    order of the layers in the learn phase (``SWEEPS``; see ``learn``).
    """

    message_size: int = 8
    state_size: int = 16
    ticks: int = 1
    hidden: tuple[int, ...] = ()
    init: str = "reference"
    sweep: str = "top_down"


INITS = ("reference", "legacy")
"""``VSMLConfig.init``: how the meta-parameters and each episode's fast state start.

- ``"reference"`` (default), as in the authors' code (``recurrent.py``,
  ``models.py`` of louiskirsch/vsml-neurips2021): forget-gate bias +5 and
  input-gate bias -5 (a memory written slowly that barely forgets), LSTM weights
  from a normal truncated at 2 std with std ``1/sqrt(fan_in)``; each episode's cell
  state is that truncated normal with std ``1/sqrt(n_in)`` on the first half of the
  ``state_size`` units and zero on the rest, ``h = 0``. No meta-learned scale.
- ``"legacy"``: this project's first choice: forget bias +1, input bias 0, normal
  weights, cell state ``init_c_scale * N(0, 1)`` on every unit with a meta-learned
  ``init_c_scale`` (0.5 at the start).
"""
FORGET_BIAS, INPUT_BIAS = 5.0, -5.0  # the reference's gate offsets
RANDOM_STATE_FRACTION = 0.5  # the reference's init_rand_proportion


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
    if config.init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {config.init!r}.")
    if config.sweep not in SWEEPS:
        raise ValueError(f"sweep must be one of {SWEEPS}, got {config.sweep!r}.")


def _truncated_normal(key: jax.Array, shape: tuple[int, ...], std: float) -> jax.Array:
    """Normal truncated at +-2 std, rescaled to std ``std`` (Haiku's ``TruncatedNormal``)."""
    # the std of a standard normal truncated at +-2 is 0.8796
    return jax.random.truncated_normal(key, -2.0, 2.0, shape) * (std / 0.87962566)


def init_meta_params(key: jax.Array, config: VSMLConfig | None = None) -> dict[str, jax.Array]:
    """The shared LSTM parameters: a few thousand numbers, whatever the layer size.

    Gate order in ``lstm_w``/``lstm_b`` columns: input, forget, candidate, output
    (``state_size`` each). ``config.init`` picks the initialisation (see ``INITS``).
    Under ``"reference"`` the gate offsets of the reference (forget +5, input -5)
    are the starting values of the learned bias, which is the same family of
    functions as a fixed offset plus a zero-initialised bias.

    Returns:
      ``{"lstm_w": f32[2m + s, 4s], "lstm_b": f32[4s], "fwd_w": f32[s, m]}``, plus
      ``"bwd_w": f32[s, m]`` when ``config.hidden`` is not empty (a single layer's
      backward messages leave the network, so ES would perturb numbers that
      cannot change the fitness; ``"legacy"`` keeps them, as before), and
      ``"init_c_scale"`` (a scalar) under ``"legacy"``.
    """
    config = VSMLConfig() if config is None else config
    validate_config(config)
    m, s = config.message_size, config.state_size
    k_lstm, k_f, k_b = jax.random.split(key, 3)
    if config.init == "legacy":
        bias = jnp.zeros(4 * s).at[s : 2 * s].set(1.0)  # forget gates start open
        return {
            "lstm_w": jax.random.normal(k_lstm, (2 * m + s, 4 * s)) / jnp.sqrt(2 * m + s),
            "lstm_b": bias,
            "fwd_w": jax.random.normal(k_f, (s, m)) / jnp.sqrt(s),
            "bwd_w": jax.random.normal(k_b, (s, m)) / jnp.sqrt(s),
            "init_c_scale": jnp.float32(0.5),  # per-episode random initial states
        }
    bias = jnp.zeros(4 * s).at[:s].set(INPUT_BIAS).at[s : 2 * s].set(FORGET_BIAS)
    meta = {
        "lstm_w": _truncated_normal(k_lstm, (2 * m + s, 4 * s), 1 / (2 * m + s) ** 0.5),
        "lstm_b": bias,
        "fwd_w": _truncated_normal(k_f, (s, m), 1 / s**0.5),
    }
    if config.hidden:  # a single layer discards its backward messages: no bwd_w to perturb
        meta["bwd_w"] = _truncated_normal(k_b, (s, m), 1 / s**0.5)
    return meta


def num_meta_params(meta: Any) -> int:
    return sum(int(jnp.size(x)) for x in jax.tree.leaves(meta))


def init_state(key: jax.Array, meta: dict, n_in: int, n_out: int, config: VSMLConfig) -> VSMLState:
    """Fresh fast state for one episode; ``c`` is random, like a random weight initialisation.

    ``"reference"``: ``c[..., :s/2]`` ~ truncated normal with std ``1/sqrt(n_in)``,
    ``c[..., s/2:] = 0``. ``"legacy"``: ``c = meta["init_c_scale"] * N(0, 1)``.
    A meta dict with ``"init_c_scale"`` (the hand-set SGD cell has 0) always uses
    the legacy rule. ``h = 0`` in both.

    Returns:
      ``VSMLState`` with h, c of f32[n_in, n_out, state_size].
    """
    shape = (n_in, n_out, config.state_size)
    dtype = meta["lstm_w"].dtype
    if "init_c_scale" in meta:
        c = meta["init_c_scale"] * jax.random.normal(key, shape, dtype)
    else:
        rand = int(config.state_size * RANDOM_STATE_FRACTION)
        c = jnp.concatenate(
            [
                _truncated_normal(key, (n_in, n_out, rand), 1 / n_in**0.5).astype(dtype),
                jnp.zeros((n_in, n_out, config.state_size - rand), dtype),
            ],
            axis=-1,
        )
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
    if "bwd_w" not in meta:  # a single layer: nobody reads the backward messages
        return state, forward_out, jnp.zeros((n_in, forward_out.shape[-1]), forward_out.dtype)
    backward_out = jnp.mean(state.h @ meta["bwd_w"], axis=1)  # f32[n_in, m]
    return state, forward_out, backward_out


def _channel0(values: jax.Array, m: int) -> jax.Array:
    """Puts f32[n] values in channel 0 of f32[n, m] messages."""
    return jnp.zeros((values.shape[0], m), values.dtype).at[:, 0].set(values)


def output_error(logits: jax.Array, label: jax.Array, num_classes: int) -> jax.Array:
    """The backward signal: d cross-entropy / d logits = ``softmax(logits) - onehot(label)``."""
    return jax.nn.softmax(logits) - jax.nn.one_hot(label, num_classes, dtype=logits.dtype)


class NetworkState(NamedTuple):
    """The fast state of a VS-ML network during an episode.

    ``layers``: one ``VSMLState`` per layer (f32[n_in_k, n_out_k, s] each);
    ``forward_in``: the forward messages f32[n_in_k, m] each layer read in the last
    predict phase (the learn phase reads them again, like a backward pass
    reuses the forward activations); ``between``: for ``sweep="bottom_up"``, the
    backward messages f32[n_hidden_k, m] sent into layer k by layer k + 1 on the
    previous tick.
    """

    layers: tuple[VSMLState, ...]
    forward_in: tuple[jax.Array, ...]
    between: tuple[jax.Array, ...]


SWEEPS = ("top_down", "bottom_up")


def init_network(
    key: jax.Array, meta: dict, n_in: int, num_classes: int, config: VSMLConfig
) -> NetworkState:
    """Fresh fast state; layer 0 starts from ``key``, layer k from ``fold_in(key, k)``."""
    if config.hidden and "bwd_w" not in meta:
        raise ValueError(
            "a network with hidden layers needs meta['bwd_w'] (its backward messages): "
            "make the meta-parameters with init_meta_params(key, config) of that config."
        )
    m, dtype = config.message_size, meta["lstm_w"].dtype
    widths = (n_in, *config.hidden, num_classes)
    layers = tuple(
        init_state(key if k == 0 else jax.random.fold_in(key, k), meta, a, b, config)
        for k, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))
    )
    forward_in = tuple(jnp.zeros((width, m), dtype) for width in widths[:-1])
    between = tuple(jnp.zeros((width, m), dtype) for width in config.hidden)
    return NetworkState(layers, forward_in, between)


def _layer_ticks(meta, state, forward_in, backward_in, ticks):
    """``ticks`` micro-ticks of one layer with fixed incoming messages."""

    def body(_, carry):
        state, _, _ = carry
        return tick(meta, state, forward_in, backward_in)

    n_in, n_out = state.h.shape[:2]
    m = forward_in.shape[-1]
    zeros = (jnp.zeros((n_out, m), forward_in.dtype), jnp.zeros((n_in, m), forward_in.dtype))
    return lax.fori_loop(0, ticks, body, (state, *zeros))


def _bottom_up_ticks(meta, net, forward_in, backward_in, config):
    """The legacy sweep: ``ticks`` ticks of every layer bottom to top; layer k reads the
    backward message layer k + 1 sent on the previous tick. Returns (net, top output)."""

    def network_tick(_, carry):
        net, _ = carry
        layers, backward_out, seen = [], [], []
        forward = forward_in
        for k, old_state in enumerate(net.layers):
            back = backward_in if k == len(net.layers) - 1 else net.between[k]
            seen.append(forward)
            layer_state, forward, back_out = tick(meta, old_state, forward, back)
            layers.append(layer_state)
            backward_out.append(back_out)
        return NetworkState(tuple(layers), tuple(seen), tuple(backward_out[1:])), forward

    top = jnp.zeros((backward_in.shape[0], config.message_size), forward_in.dtype)
    return lax.fori_loop(0, config.ticks, network_tick, (net, top))


def predict(
    meta: dict, net: NetworkState, x: jax.Array, *, num_classes: int, config: VSMLConfig
) -> tuple[NetworkState, jax.Array]:
    """The predict phase for one example x f32[n_in]: returns (net, logits f32[C]).

    ``"top_down"``: layers tick bottom to top, ``config.ticks`` micro-ticks each,
    with zero backward messages; each remembers the forward messages it read.
    """
    m = config.message_size
    forward = _channel0(x, m)
    zero_back = jnp.zeros((num_classes, m), x.dtype)
    if config.sweep == "bottom_up":
        net, out = _bottom_up_ticks(meta, net, forward, zero_back, config)
        return net, out[:, 0]
    layers, seen = [], []
    for old_state in net.layers:
        seen.append(forward)
        back = jnp.zeros((old_state.h.shape[1], m), x.dtype)
        layer_state, forward, _ = _layer_ticks(meta, old_state, forward, back, config.ticks)
        layers.append(layer_state)
    return net._replace(layers=tuple(layers), forward_in=tuple(seen)), forward[:, 0]


def learn(
    meta: dict, net: NetworkState, x: jax.Array, error: jax.Array, *, config: VSMLConfig
) -> NetworkState:
    """The learn phase for one example, with the output error f32[C].

    ``"top_down"`` (the reference's ``backward_pass``): the top layer ticks with
    the error as its backward message, then each layer below ticks with the
    backward message the layer above sent *in this phase*, so the error of
    example t reaches layer 0 before example t + 1 is seen. Every layer reads
    again the forward messages of its predict phase. ``"bottom_up"``: the
    legacy sweep, where a hidden layer hears of the error one tick later.
    """
    m = config.message_size
    back = _channel0(error, m)
    if config.sweep == "bottom_up":
        net, _ = _bottom_up_ticks(meta, net, _channel0(x, m), back, config)
        return net
    layers = list(net.layers)
    for k in reversed(range(len(layers))):
        layers[k], _, back = _layer_ticks(meta, layers[k], net.forward_in[k], back, config.ticks)
    return net._replace(layers=tuple(layers))


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

    For each example the network predicts (``predict``), then learns from the
    error ``softmax(logits) - onehot(y)`` (``learn``).

    Args:
      inputs: f32[T, n_in], one example per step.
      labels: i32[T].

    Returns:
      logits f32[T, num_classes], each computed *before* its label was shown.
    """
    config = VSMLConfig() if config is None else config
    net = init_network(key, meta, inputs.shape[1], num_classes, config)

    def step(net, example):
        x, y = example
        net, logits = predict(meta, net, x, num_classes=num_classes, config=config)
        error = output_error(logits, y, num_classes)
        return learn(meta, net, x, error, config=config), logits

    _, logits = lax.scan(step, net, (inputs, labels))
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


def online_mlp_sgd_logits(
    inputs: jax.Array,
    labels: jax.Array,
    weights: tuple[jax.Array, ...] | list[jax.Array],
    *,
    lr: float | jax.Array,
) -> jax.Array:
    """The multi-layer reference learner: online backprop on a tanh MLP without biases.

    With ``a_0 = x`` and weights ``W_k`` f32[n_k, n_{k+1}] (starting at ``weights``),
    each example is first predicted,

    .. math:: a_{k+1} = \\tanh(a_k W_k) \\;(k < K - 1), \\qquad
              z = a_{K-1} W_{K-1},

    then every layer takes one SGD step on its cross-entropy,
    :math:`W_k \\leftarrow W_k - \\eta\\, a_k^\\top \\delta_k` with
    :math:`\\delta_{K-1} = \\mathrm{softmax}(z) - \\mathrm{onehot}(y)` and
    :math:`\\delta_{k-1} = (\\delta_k W_k^\\top) \\odot (1 - a_k^2)` (batch size 1,
    the gradients taken before any layer moves). ``tanh`` because a VS-ML hidden unit
    sends a bounded, odd-symmetric message (a mean of ``o * tanh(c)``); no biases,
    because a VS-ML layer keeps state per connection, not per unit.
    ``weights=(W,)`` is online SGD on ``z = x W`` (``online_sgd_logits`` in the
    usual scale: ``W = w / n_in``, ``lr / n_in``).

    Args:
      inputs: f32[T, n_0]; labels: i32[T]; weights: the initial ``W_k``.

    Returns:
      logits f32[T, n_K], each computed before its label was shown.
    """

    def loss(ws, x, y):
        a = x
        for w in ws[:-1]:
            a = jnp.tanh(a @ w)
        logits = a @ ws[-1]
        return -jax.nn.log_softmax(logits)[y], logits

    def step(ws, example):
        x, y = example
        grads, logits = jax.grad(loss, has_aux=True)(ws, x, y)
        return tuple(w - lr * g for w, g in zip(ws, grads, strict=True)), logits

    _, logits = lax.scan(step, tuple(weights), (inputs, labels))
    return logits


def init_mlp_weights(key: jax.Array, sizes: tuple[int, ...]) -> tuple[jax.Array, ...]:
    """Initial MLP weights f32[n_k, n_{k+1}]: truncated normal, std ``1/sqrt(n_k)``.

    The same distribution as unit 0 of a VS-ML layer's initial cell state under the
    ``"reference"`` init (what ``initial_weights`` reads as the teacher's weights),
    so a baseline MLP run by ``online_mlp_sgd_logits`` starts like the teacher does.
    """
    keys = jax.random.split(key, len(sizes) - 1)
    return tuple(
        _truncated_normal(k, (a, b), 1 / a**0.5)
        for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
    )


def initial_weights(net: NetworkState) -> tuple[jax.Array, ...]:
    """The teacher's initial MLP weights: unit 0 of each layer's initial cell state.

    ``net`` from ``init_network``: returns one f32[n_in_k, n_out_k] per layer
    (``c[..., 0]``, no gradient). Teacher and VS-ML network then start from the
    same random draw, so the teacher's predictions are a function of what the
    VS-ML network holds and the imitation loss can in principle reach zero.
    """
    return tuple(lax.stop_gradient(layer.c[..., 0]) for layer in net.layers)


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

    Runs the VS-ML network and a teacher on the same stream, each driven by its
    own errors, and returns the mean squared difference of their predictions, a
    scalar:

    .. math:: \\mathcal{L}(\\phi) = \\tfrac{1}{T C} \\textstyle\\sum_{t, j}
              \\big(z^{\\mathrm{VSML}}_{tj}(\\phi) - z^{\\mathrm{teacher}}_{tj}\\big)^2 .

    One layer (``config.hidden == ()``): the teacher is online SGD on the linear
    layer from ``w = 0`` (``online_sgd_logits``, learning rate ``lr``). With hidden
    layers: online backprop on the tanh MLP of the same widths
    (``online_mlp_sgd_logits``, learning rate ``lr``), starting from the weights
    ``initial_weights`` reads from the VS-ML network's initial state (same ``key``).
    At zero the meta-parameters implement that teacher.
    """
    config = VSMLConfig() if config is None else config
    vsml_logits = online_logits(meta, key, inputs, labels, num_classes=num_classes, config=config)
    if config.hidden:
        net = init_network(key, meta, inputs.shape[1], num_classes, config)
        target = online_mlp_sgd_logits(inputs, labels, initial_weights(net), lr=lr)
    else:
        target = online_sgd_logits(inputs, labels, num_classes=num_classes, lr=lr)
    return jnp.mean((vsml_logits - target) ** 2)


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
