"""Computes ES gradients on a mesh and saves them; run as a subprocess by test_es.py.

Usage: python es_worker.py OUT.npz DEVICES [process_id num_processes port [forever]]
Simulated CPU devices are set before JAX starts; with a process id it joins a
``jax.distributed`` job on 127.0.0.1 through gloo. With ``forever`` it keeps
computing sharded gradients, printing ``step N`` after each (for the
dead-peer tests, which kill one process mid-run).
"""

from __future__ import annotations

import sys


def small_problem():
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=32)
    params = {
        "w1": jnp.asarray(rng.normal(size=(6, 16)) * 0.3, jnp.float32),
        "b1": jnp.zeros(16),
        "w2": jnp.asarray(rng.normal(size=(16, 3)) * 0.3, jnp.float32),
    }

    def loss_fn(p, x, y):
        h = jnp.tanh(x @ p["w1"] + p["b1"])
        logits = h @ p["w2"]
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(y.shape[0]), y])

    return loss_fn, params, (x, y)


def main() -> None:
    out, devices = sys.argv[1], int(sys.argv[2])
    multi = len(sys.argv) > 3
    if multi:
        process_id, num_processes, port = (int(a) for a in sys.argv[3:6])
        from esmeta_core.sharding import initialize_distributed

        print("joining", flush=True)
        initialize_distributed(
            f"127.0.0.1:{port}", num_processes, process_id, local_device_count=devices
        )
    import jax

    if not multi:
        jax.config.update("jax_num_cpu_devices", devices)  # before JAX starts its backends
    import numpy as np

    from esmeta_core import es, sharding

    loss_fn, params, args = small_problem()
    if len(sys.argv) > 6 and sys.argv[6] == "forever":
        mesh = sharding.population_mesh()
        config = es.ESConfig(population=64, sigma=0.05, chunk_size=4)
        grad_fn = es.make_es_grad(loss_fn, config=config, mesh=mesh)
        inputs = sharding.replicate((params, jax.random.key_data(jax.random.key(7)), *args), mesh)
        step = 0
        while True:
            grads, _ = grad_fn(*inputs)
            sharding.to_host(grads)
            step += 1
            print(f"step {step}", flush=True)
    results = {}
    mesh_sizes = [jax.device_count()] if multi else [1, 2, 4, 8][: [1, 2, 4, 8].index(devices) + 1]
    for size in mesh_sizes:
        mesh = sharding.population_mesh(jax.devices()[:size])
        for scheme in es.COMMUNICATIONS:
            config = es.ESConfig(population=64, sigma=0.05, communication=scheme, chunk_size=4)
            grad_fn = es.make_es_grad(loss_fn, config=config, mesh=mesh)
            inputs = sharding.replicate(
                (params, jax.random.key_data(jax.random.key(7)), *args), mesh
            )
            grads, stats = grad_fn(*inputs)
            grads = sharding.to_host(grads)
            for name, leaf in grads.items():
                results[f"{size}/{scheme}/{name}"] = leaf
            results[f"{size}/{scheme}/losses"] = sharding.to_host(stats.losses)
            if scheme == "psum" and size in (1, 8):  # has_aux: the same gradient, all aux
                with_aux = lambda p, *a: (loss_fn(p, *a), {"loss": loss_fn(p, *a), "w": p["w2"]})
                aux_fn = es.make_es_grad(with_aux, config=config, mesh=mesh, has_aux=True)
                aux_grads, _, aux = sharding.to_host(aux_fn(*inputs))
                for name, leaf in {**aux_grads, **{f"aux_{k}": v for k, v in aux.items()}}.items():
                    results[f"{size}/aux/{name}"] = leaf
    if not multi or jax.process_index() == 0:
        np.savez(out, **results)
    print("worker done", jax.process_index(), jax.device_count(), flush=True)


if __name__ == "__main__":
    main()
