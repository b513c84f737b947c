"""Computes a VS-ML ES meta-gradient on 1 and on 8 simulated devices; run by test_vsml.py."""

from __future__ import annotations

import sys


def main() -> None:
    import jax
    import numpy as np

    jax.config.update("jax_num_cpu_devices", 8)  # before JAX starts its backends

    from esmeta_core import es, sharding, vsml
    from esmeta_core.data import tasks
    from esmeta_core.data.digits import load_digits

    data = load_digits(seed=0)
    features = data.train_x.reshape(len(data.train_x), -1)
    rng = np.random.default_rng(0)
    task = tasks.sample_task(rng, features, data.train_y, num_classes=3, length=20, n_in=8)
    config = vsml.VSMLConfig(message_size=4, state_size=8)
    meta = vsml.init_meta_params(jax.random.key(0), config)

    def meta_loss(meta, x, y):
        losses, _ = vsml.online_episode(meta, jax.random.key(1), x, y, num_classes=3, config=config)
        return losses.mean()

    out = {}
    for devices in (1, 8):
        mesh = sharding.population_mesh(jax.devices()[:devices])
        grad_fn = es.make_es_grad(
            meta_loss, config=es.ESConfig(population=32, sigma=0.05), mesh=mesh
        )
        grads, _ = grad_fn(meta, jax.random.key(2), *task)
        for name, leaf in grads.items():
            out[f"{devices}/{name}"] = np.asarray(leaf)
    np.savez(sys.argv[1], **out)


if __name__ == "__main__":
    main()
