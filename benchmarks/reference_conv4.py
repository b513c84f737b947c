"""The textbook Conv4: the reference the fused ``protonet.Conv4`` is checked and timed against.

It lives outside the library because nothing trains with it: ``tests/test_protonet.py``
checks that :class:`~esmeta_core.protonet.Conv4` computes the same embedding with the
same parameters, and ``benchmarks/conv4_forward.py`` times the two side by side.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from esmeta_core.protonet import FeatureTransform, SupportBatchNorm


class PlainConv4(nn.Module):
    """The textbook Conv4: ``nn.Conv``, batch norm, ReLU, ``nn.max_pool``, in that order.

    Same parameters (names, shapes, initialisation) and the same embedding as
    :class:`esmeta_core.protonet.Conv4` up to float rounding, and slower in an ES
    population loop on a CPU.
    """

    width: int = 64
    depth: int = 4

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        *,
        stats_rows: int | None = None,
        transform: FeatureTransform | None = None,
    ) -> jax.Array:
        """Embeds images: f32[n, h, w, 1] -> f32[n, d] (``transform`` as in ``protonet.Conv4``)."""
        stats_rows = x.shape[0] if stats_rows is None else stats_rows
        for i in range(self.depth):
            x = nn.Conv(self.width, (3, 3), padding="SAME")(x)
            x = SupportBatchNorm(name=f"SupportBatchNorm_{i}")(x, stats_rows)
            if transform is not None:
                x = x * transform.gamma[i] + transform.beta[i]
            x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
        return x.reshape(x.shape[0], -1)
