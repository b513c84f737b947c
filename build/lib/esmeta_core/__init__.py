"""esmeta_core: evolution strategies for meta-learning, in JAX.

Modules: ``es`` (the ES gradient estimator), ``protonet`` (Prototypical
Networks), ``evograd`` (EvoGrad hypergradients), ``data`` (Omniglot and
episodes), ``train`` (meta-training loops) and ``cli`` (the ``esmeta`` command).
"""

__version__ = "0.1.0"
