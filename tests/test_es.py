"""The ES estimator: unbiasedness, shaping, antithetic pairs, NaN, sharding, memory."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from esmeta_core import es, sharding
from esmeta_core.distributed import free_port as _free_port
from esmeta_core.distributed import launch, wait_all
from esmeta_core.profiling import compiled_memory

WORKER = Path(__file__).with_name("es_worker.py")


def _cosine(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("shaping", es.SHAPINGS)
def test_estimate_aligns_with_true_gradient_of_quadratic(shaping):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(10, 10))
    hess = jnp.asarray(a @ a.T / 10 + np.eye(10), jnp.float32)
    x0 = jnp.asarray(rng.normal(size=10), jnp.float32)
    loss = lambda x: 0.5 * x @ hess @ x + jnp.sum(x)
    config = es.ESConfig(population=16384, sigma=0.01, shaping=shaping, chunk_size=256)
    grads, _ = es.make_es_grad(loss, config=config)(x0, jax.random.key(0))
    assert _cosine(grads, jax.grad(loss)(x0)) >= 0.99


def test_raw_estimate_is_unbiased_for_gaussian_smoothed_gradient():
    # L(x) = sum(sin x) has smoothed gradient E[cos(x + sigma eps)] = cos(x) exp(-sigma^2 / 2).
    sigma, keys, x0 = 0.5, 200, jnp.linspace(-1.5, 1.5, 5)
    loss = lambda x: jnp.sum(jnp.sin(x))
    grad_fn = es.make_es_grad(
        loss, config=es.ESConfig(population=512, sigma=sigma, shaping="raw", chunk_size=64)
    )
    estimates = np.stack([grad_fn(x0, jax.random.key(k))[0] for k in range(keys)])
    mean, stderr = estimates.mean(0), estimates.std(0, ddof=1) / np.sqrt(keys)
    smoothed = np.cos(x0) * np.exp(-(sigma**2) / 2)
    assert np.all(np.abs(mean - smoothed) < 5 * stderr)  # a 5-sigma bound per coordinate
    # The bound is tight enough to tell the smoothed gradient from the plain one.
    assert np.any(np.abs(mean - np.cos(x0)) > 5 * stderr)


def test_centered_ranks_sum_to_zero_and_span_half_interval():
    x = jax.random.normal(jax.random.key(1), (1001,))
    ranks = es.centered_ranks(x)
    assert abs(float(ranks.sum())) < 1e-3
    assert float(ranks.min()) == -0.5 and float(ranks.max()) == 0.5
    assert int(jnp.argmin(ranks)) == int(jnp.argmin(x))


def test_antithetic_pairs_are_exact_negatives():
    params = {"a": jnp.zeros((3, 4)), "b": jnp.zeros(5)}
    key = jax.random.key(3)
    for j in range(4):
        plus = es.member_noise(key, params, 2 * j)
        minus = es.member_noise(key, params, 2 * j + 1)
        for p, m in zip(jax.tree.leaves(plus), jax.tree.leaves(minus), strict=True):
            np.testing.assert_array_equal(np.asarray(p), -np.asarray(m))


def test_antithetic_members_are_evaluated_at_mirrored_points():
    c = jnp.arange(1.0, 7.0)
    theta = jnp.full(6, 0.3)
    loss = lambda x: jnp.dot(x, c)  # linear: L(theta + d) + L(theta - d) = 2 L(theta)
    _, stats = es.make_es_grad(loss, config=es.ESConfig(population=32, sigma=0.1))(
        theta, jax.random.key(0)
    )
    pairs = np.asarray(stats.losses).reshape(-1, 2)
    np.testing.assert_allclose(pairs.sum(1), 2 * float(loss(theta)), rtol=1e-5)


def test_nonfinite_losses_rank_worst_and_update_stays_finite():
    loss = lambda x: jnp.where(x[0] > 0.05, jnp.nan, jnp.sum((x - 1.0) ** 2))
    grads, stats = es.make_es_grad(loss, config=es.ESConfig(population=256, sigma=0.1))(
        jnp.zeros(4), jax.random.key(0)
    )
    assert int(stats.num_nonfinite) > 0
    assert np.all(np.isfinite(grads)) and np.isfinite(float(stats.loss_mean))
    assert float(grads[1]) < 0  # still descends towards x = 1 in the finite coordinates


def test_all_nonfinite_gives_zero_update():
    grads, stats = es.make_es_grad(lambda x: jnp.nan * x.sum(), config=es.ESConfig(population=8))(
        jnp.ones(3), jax.random.key(0)
    )
    assert int(stats.num_nonfinite) == 8
    np.testing.assert_array_equal(grads, 0.0)


@pytest.mark.parametrize(
    "config,devices,match",
    [
        (es.ESConfig(population=7), 1, "odd"),
        (es.ESConfig(population=12), 8, "does not split evenly over 8 devices"),
        (es.ESConfig(sigma=0.0), 1, "sigma must be a positive number"),
        (es.ESConfig(sigma=-1.0), 1, "sigma must be a positive number"),
        (es.ESConfig(shaping="ranks"), 1, "shaping must be one of"),
        (es.ESConfig(communication="allreduce"), 1, "communication must be one of"),
        (es.ESConfig(chunk_size=0), 1, "chunk_size must be a positive integer"),
    ],
    ids=[
        "odd-antithetic",
        "not-divisible",
        "zero-sigma",
        "negative-sigma",
        "unknown-shaping",
        "unknown-scheme",
        "zero-chunk",
    ],
)
def test_bad_config_is_rejected_with_the_field_named(config, devices, match):
    with pytest.raises(ValueError, match=match):
        es.validate_config(config, devices)


def test_temporary_memory_does_not_grow_with_population():
    """No N x D buffer: at N = 4096 temporaries stay within 2x of N = 64 (D = 262,656)."""
    params = {"w": jnp.zeros((512, 512)), "b": jnp.zeros(512)}
    x = jnp.ones((8, 512))
    loss = lambda p, x: jnp.mean(jnp.tanh(x @ p["w"] + p["b"]) ** 2)

    def temp_bytes(population):
        fn = es.make_es_grad(loss, config=es.ESConfig(population=population, chunk_size=4))
        return compiled_memory(fn, params, jax.random.key(0), x)["temp_bytes"]

    small, large = temp_bytes(64), temp_bytes(4096)
    n_by_d = 4096 * 512 * 513 * 4
    assert large < 2 * small + 4 * 4096 * 4, (small, large)
    assert large < n_by_d / 100


def _run(args, timeout):
    return launch([WORKER, *args])


def _finish(procs, timeout):
    """Waits for every process; kills all and fails if one dies or hangs."""
    return [out for out, _ in wait_all(procs, timeout=timeout)]


@pytest.fixture(scope="module")
def eight_device_grads(tmp_path_factory):
    out = tmp_path_factory.mktemp("es") / "grads.npz"
    _finish([_run([out, 8], 300)], 300)
    return dict(np.load(out))


@pytest.mark.parametrize("devices", [2, 4, 8], ids=["2-devices", "4-devices", "8-devices"])
@pytest.mark.parametrize("scheme", es.COMMUNICATIONS)
def test_same_gradient_on_1_2_4_8_devices(eight_device_grads, devices, scheme):
    reference = {
        k.split("/")[-1]: v for k, v in eight_device_grads.items() if k.startswith("1/psum/")
    }
    for name, value in reference.items():
        np.testing.assert_allclose(
            eight_device_grads[f"{devices}/{scheme}/{name}"], value, rtol=1e-5, atol=1e-6
        )


def test_same_gradient_on_2_processes_with_2_devices_each(eight_device_grads, tmp_path):
    out, port = tmp_path / "multi.npz", _free_port()
    procs = [_run([out, 2, rank, 2, port], 240) for rank in range(2)]
    _finish(procs, 240)
    multi = np.load(out)
    for scheme in es.COMMUNICATIONS:
        for name in ("w1", "b1", "w2", "losses"):
            np.testing.assert_allclose(
                multi[f"4/{scheme}/{name}"],
                eight_device_grads[f"1/psum/{name}"],
                rtol=1e-5,
                atol=1e-6,
            )


class _Lines:
    """Reads a worker's output on a thread, so the test can wait for a line with a deadline."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.lines, self._queue = proc, [], queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, prefix: str, timeout: float) -> bool:
        """True once a line starting with ``prefix`` arrives; False at EOF or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                return False
            if line is None:
                return False
            self.lines.append(line)
            if line.startswith(prefix):
                return True
        return False

    def text(self) -> str:
        while not self._queue.empty():
            line = self._queue.get()
            if line is not None:
                self.lines.append(line)
        return "".join(self.lines)[-3000:]


def _exit_within(proc: subprocess.Popen, bound: float) -> float:
    """Seconds until ``proc`` exits; kills it and FAILS the test if it is still running at bound."""
    start = time.monotonic()
    try:
        proc.wait(timeout=bound)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"the surviving process hung: still running {bound:.0f} s after the failure")
    return time.monotonic() - start


# Slack over the stated bound for a loaded 2-core CI machine (process exit, log flushing).
_SLACK_S = 10.0


def test_never_started_peer_makes_process_0_exit_nonzero_within_startup_timeout(tmp_path):
    # Process 1 of 2 never starts. Process 0 must give up after the start-up timeout with a
    # non-zero exit; the test fails if it is still waiting after that bound.
    proc = _run([tmp_path / "x.npz", 2, 0, 2, _free_port()], None)
    out = _Lines(proc)
    assert out.wait_for("joining", 120), out.text()
    took = _exit_within(proc, sharding.STARTUP_TIMEOUT_S + _SLACK_S)
    assert proc.returncode != 0, out.text()
    assert took >= sharding.STARTUP_TIMEOUT_S - 5  # it did wait for the peer, then gave up
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("victim", [1, 0], ids=["worker-killed", "coordinator-killed"])
def test_peer_killed_mid_run_makes_survivor_exit_nonzero_within_bound(tmp_path, victim):
    port = _free_port()
    procs = [_run([tmp_path / "x.npz", 2, rank, 2, port, "forever"], None) for rank in range(2)]
    outs = [_Lines(p) for p in procs]
    try:
        for out in outs:
            assert out.wait_for("step 2", 240), out.text()
        procs[victim].kill()
        survivor = procs[1 - victim]
        # Well below the shutdown timeout: the survivor must not wait it out.
        bound = sharding.HEARTBEAT_TIMEOUT_S + _SLACK_S
        assert bound < sharding.SHUTDOWN_TIMEOUT_S
        _exit_within(survivor, bound)
        assert survivor.returncode != 0, outs[1 - victim].text()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_failure_bound_covers_both_cases_and_is_at_most_30_s():
    assert sharding.STARTUP_TIMEOUT_S <= sharding.FAILURE_BOUND_S
    assert sharding.HEARTBEAT_TIMEOUT_S <= sharding.FAILURE_BOUND_S
    assert sharding.FAILURE_BOUND_S <= 30


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "30"])
def test_initialize_distributed_rejects_bad_timeouts_before_starting(bad):
    with pytest.raises(ValueError, match="startup_timeout_s must be a whole number"):
        sharding.initialize_distributed("127.0.0.1:1", 2, 0, startup_timeout_s=bad)


def test_exit_bound_check_fails_when_the_process_hangs():
    # The dead-peer tests above must fail, not pass, when a survivor hangs.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with pytest.raises(pytest.fail.Exception, match="hung"):
        _exit_within(sleeper, 1.0)
    assert sleeper.poll() is not None


_SLOW_EXIT = """
import sys, time
from esmeta_core.sharding import initialize_distributed
rank = int(sys.argv[1])
initialize_distributed(f"127.0.0.1:{sys.argv[2]}", 2, rank, local_device_count=1)
import jax
assert jax.device_count() == 2
time.sleep(float(sys.argv[3]) if rank == 1 else 0)  # process 1 finishes later
print("done", rank, flush=True)
"""


def test_a_live_peer_that_finishes_later_is_waited_for_at_exit():
    # The short failure bounds must not break ordinary runs whose processes end apart.
    port, late = _free_port(), sharding.HEARTBEAT_TIMEOUT_S + 5
    procs = [launch(["-c", _SLOW_EXIT, rank, port, late]) for rank in range(2)]
    _finish(procs, 180)


# ----------------------------------------------------------------------------
# Options around the estimator: fixed leaves, a sigma per leaf, pair shaping.


def _quadratic_tree():
    params = {"a": jnp.asarray([[0.3, -0.2], [0.1, 0.4]]), "b": jnp.asarray([0.5, -1.0, 2.0])}
    loss = lambda p: jnp.sum((p["a"] - 1.0) ** 2) + jnp.sum(jnp.sin(p["b"]))
    return params, loss


def test_masked_with_every_leaf_perturbed_is_plain_es_exactly():
    params, loss = _quadratic_tree()
    config = es.ESConfig(population=64, sigma=0.05)
    plain, _ = es.es_grad(loss, params, jax.random.key(2), config=config)
    masked, _ = es.es_grad_masked(loss, params, jax.random.key(2), config=config)
    for p, w in zip(jax.tree.leaves(plain), jax.tree.leaves(masked), strict=True):
        np.testing.assert_array_equal(np.asarray(p), np.asarray(w))


def test_unperturbed_leaves_get_zero_gradient_and_the_rest_is_es_on_the_free_leaves():
    params, loss = _quadratic_tree()
    config = es.ESConfig(population=64, sigma=0.05)
    grads, _ = es.es_grad_masked(
        loss, params, jax.random.key(4), config=config, perturb={"a": True, "b": False}
    )
    np.testing.assert_array_equal(np.asarray(grads["b"]), 0.0)
    only_a, _ = es.es_grad(
        lambda free: loss({"a": free[0], "b": params["b"]}),
        [params["a"]],
        jax.random.key(4),
        config=config,
    )
    np.testing.assert_allclose(np.asarray(grads["a"]), np.asarray(only_a[0]), rtol=1e-6)


def test_pair_z_score_weights_have_unit_rms_and_the_sign_of_the_difference():
    losses = jnp.asarray([[1.0, 3.0], [2.0, 1.5], [0.0, 0.0], [5.0, 1.0]])
    weights = es.direction_weights(losses, "pair_z_score")
    np.testing.assert_allclose(float(jnp.sqrt(jnp.mean(weights**2))), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.sign(weights), [-1.0, 1.0, 0.0, 1.0])
    # The direction weight is the difference over its root mean square, to the last bit.
    diffs = losses[:, 0] - losses[:, 1]
    np.testing.assert_array_equal(weights, diffs / (jnp.sqrt(jnp.mean(diffs**2)) + 1e-12))


def test_pair_z_score_without_antithetic_pairs_is_the_z_score():
    losses = jnp.asarray([[1.0], [3.0], [2.0], [0.5]])
    np.testing.assert_array_equal(
        es.direction_weights(losses, "pair_z_score"), es.z_scores(losses[:, 0])
    )


@pytest.mark.parametrize("name", es.SHAPINGS)
def test_a_shaping_callable_gives_the_estimate_of_its_name(name):
    params, loss = _quadratic_tree()
    key, named = jax.random.key(3), es.ESConfig(population=64, sigma=0.05, shaping=name)
    by_name, _ = es.es_grad(loss, params, key, config=named)
    function = es.SHAPING_FUNCTIONS[name]
    by_callable, _ = es.es_grad(loss, params, key, config=named._replace(shaping=function))
    for a, b in zip(jax.tree.leaves(by_name), jax.tree.leaves(by_callable), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_custom_shaping_callable_sets_the_member_weights():
    # Weights s_i = 1 for the plus member and 0 for the minus one: g = 1/(N sigma) sum_j eps_j.
    params, loss = _quadratic_tree()
    plus_only = lambda s: jnp.tile(jnp.asarray([1.0, 0.0]), 4)
    config = es.ESConfig(population=8, sigma=0.5, shaping=plus_only)
    grads, _ = es.es_grad(loss, params, jax.random.key(6), config=config)
    noise = [es.direction_noise(jax.random.key(6), params, j) for j in range(4)]
    expected = jax.tree.map(lambda *e: sum(e) / (8 * 0.5), *noise)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_pair_z_score_is_invariant_to_the_loss_scale():
    params, loss = _quadratic_tree()
    config = es.ESConfig(population=64, sigma=0.05, shaping="pair_z_score")
    g1, _ = es.es_grad(loss, params, jax.random.key(5), config=config)
    g10, _ = es.es_grad(lambda p: 10.0 * loss(p), params, jax.random.key(5), config=config)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g10), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 2, 4, 8, "auto"], ids=lambda c: f"chunk{c}")
def test_gradient_is_the_same_for_every_chunk_size(chunk_size):
    loss = lambda p, x: jnp.sum(jnp.tanh(p["w"] @ x) ** 2) + jnp.sum(p["b"] ** 2)
    params = {"w": jnp.ones((3, 4)) * 0.1, "b": jnp.arange(3.0)}
    x = jnp.linspace(-1.0, 1.0, 4)
    key = jax.random.key(7)
    reference, _ = es.es_grad(loss, params, key, x, config=es.ESConfig(population=16))
    config = es.ESConfig(population=16, chunk_size=chunk_size)
    grads, _ = jax.jit(lambda p, k, x: es.es_grad(loss, p, k, x, config=config))(params, key, x)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_auto_chunk_is_one_on_cpu_and_fits_the_memory_budget_on_an_accelerator():
    loss = lambda p: jnp.sum(jnp.sin(p) ** 2)
    params, key = jnp.zeros(512), jax.random.key(0)
    auto = es.ESConfig(population=32, chunk_size="auto")
    resolve = lambda **kw: es.resolve_chunk_size(loss, params, key, config=auto, **kw).chunk_size
    assert resolve(backend="cpu") == 1
    assert resolve(backend="tpu", budget_bytes=2**40) == 16  # all 16 directions at once
    # A budget below one member's temporaries leaves the smallest chunk.
    assert resolve(backend="tpu", budget_bytes=0) == 1
    assert (
        es.resolve_chunk_size(loss, params, key, config=es.ESConfig(chunk_size=4)).chunk_size == 4
    )


def test_backprop_memory_grows_with_the_episode_while_chunked_es_memory_stays_flat():
    from esmeta_core import protonet

    model = protonet.Conv4(8)
    params = protonet.init_params(jax.random.key(0), model)
    plain = lambda p, e: protonet.episode_loss(model, p, e, way=5)
    chunked = lambda p, e: protonet.episode_loss(model, p, e, way=5, query_chunk=25)
    config = es.ESConfig(population=8)
    small, large = (
        es.es_vs_backprop_memory(
            chunked, plain, params, protonet.episode_spec(5, 5, q), config=config
        )
        for q in (5, 80)
    )
    assert large["backprop_bytes"] > 4 * small["backprop_bytes"]
    assert large["es_bytes"] < 2 * small["es_bytes"]


# ----------------------------------------------------------------------------
# has_aux: the loss also returns metrics; ask/tell: the fitness is computed outside JAX.


def _with_aux(loss):
    return lambda p: (loss(p), {"loss": loss(p), "a": p["a"]})


@pytest.mark.parametrize("antithetic", [True, False], ids=["antithetic", "plain"])
def test_has_aux_keeps_the_gradient_and_returns_every_members_aux(antithetic):
    params, loss = _quadratic_tree()
    config = es.ESConfig(population=8, sigma=0.05, antithetic=antithetic)
    key = jax.random.key(8)
    plain, stats = es.make_es_grad(loss, config=config)(params, key)
    grads, aux_stats, aux = es.make_es_grad(_with_aux(loss), config=config, has_aux=True)(
        params, key
    )
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(grads), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(aux["loss"], stats.losses, rtol=1e-6)  # a recomputed loss
    np.testing.assert_array_equal(aux_stats.losses, stats.losses)
    assert aux["a"].shape == (8, 2, 2)
    for i in range(8):  # member i's aux is the member's own perturbed parameters
        noise = es.member_noise(key, params, i, antithetic=antithetic)
        np.testing.assert_allclose(aux["a"][i], params["a"] + 0.05 * noise["a"], atol=1e-6)


def test_has_aux_in_the_masked_estimator():
    params, loss = _quadratic_tree()
    config, key = es.ESConfig(population=8, sigma=0.05), jax.random.key(9)
    perturb = {"a": True, "b": False}
    plain, stats = es.es_grad_masked(loss, params, key, config=config, perturb=perturb)
    grads, _, aux = es.es_grad_masked(
        _with_aux(loss), params, key, config=config, perturb=perturb, has_aux=True
    )
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(grads), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(aux["loss"], stats.losses, rtol=1e-6)


def test_has_aux_on_1_and_8_devices(eight_device_grads):
    # The worker's aux is {"loss": the member's loss, "w": its perturbed w2}.
    for size in (1, 8):
        for name in ("w1", "b1", "w2"):
            np.testing.assert_array_equal(
                eight_device_grads[f"{size}/aux/{name}"], eight_device_grads[f"{size}/psum/{name}"]
            )
        np.testing.assert_allclose(
            eight_device_grads[f"{size}/aux/aux_loss"],
            eight_device_grads[f"{size}/psum/losses"],
            rtol=1e-6,
        )
        aux_w = eight_device_grads[f"{size}/aux/aux_w"]
        assert aux_w.shape == (64, 16, 3)
        np.testing.assert_allclose(aux_w, eight_device_grads["1/aux/aux_w"], atol=1e-6)
    pairs = eight_device_grads["8/aux/aux_w"].reshape(32, 2, 16, 3)  # +-eps_j about one centre
    centres = pairs[:, 0] + pairs[:, 1]
    np.testing.assert_allclose(centres, np.broadcast_to(centres[0], centres.shape), atol=1e-5)


def test_ask_tell_with_numpy_fitness_gives_es_grad(tmp_path):
    """Runs every Python block of docs/api.md; the ask/tell block matches es_grad."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    blocks = text.split("```python\n")[1:]
    assert len(blocks) == 2
    for block in blocks:
        namespace: dict = {}
        exec(compile(block.split("```")[0], "docs/api.md", "exec"), namespace)
    params, key, config = namespace["params"], namespace["key"], namespace["config"]
    expected, _ = es.es_grad(lambda p: jnp.sum((p - 1.0) ** 2), params, key, config=config)
    np.testing.assert_allclose(namespace["grads"], expected, rtol=1e-6, atol=1e-7)
    assert float(namespace["grads"] @ (1.0 - params)) < 0  # a descent direction
