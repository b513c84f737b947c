"""Does averaging a run's last checkpoints (iterate averaging) beat its last one? (issue 17)

For each workdir: the mean of the parameters of every kept checkpoint (the last three,
``checkpoint.KEEP``), its conv kernels put back on the unit sphere when the run uses
``unit_kernels``, against the last checkpoint alone; 5w5s test accuracy on 1000 episodes
(the same episodes for both).

  python scripts/diagnostics/checkpoint_average.py results/protonet/long ...
"""

import sys
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from esmeta_core import checkpoint, optim, protonet
from esmeta_core.data.omniglot import load_split
from esmeta_core.evaluation import evaluate
from esmeta_core.train_step import init_state, model_for

test = load_split("test").images
for workdir in map(Path, sys.argv[1:]):
    config = checkpoint.saved_config(workdir)
    model = model_for(config)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, init_state(config, model).params)
    with checkpoint.manager(workdir) as manager:
        steps = sorted(manager.all_steps())
        kept = [
            manager.restore(s, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract)))[
                "params"
            ]
            for s in steps
        ]
    mean = jax.tree.map(lambda *x: sum(x) / len(x), *kept)
    if config.unit_kernels:
        kernels = protonet.conv_kernel_mask(mean)
        mean = jax.tree.map(lambda x, k: optim.unit_channels(x) if k else x, mean, kernels)
    test_kw = dict(way=5, shot=5, query=15, episodes=1000)
    last = evaluate(model, kept[-1], test, **test_kw).accuracy
    averaged = evaluate(model, mean, test, **test_kw).accuracy
    print(
        f"{workdir}: steps {steps}: last {100 * last:.2f} %, mean of the {len(kept)} "
        f"checkpoints {100 * averaged:.2f} %"
    )
