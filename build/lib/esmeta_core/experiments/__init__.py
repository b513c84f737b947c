"""Experiments beyond ProtoNet meta-training, each writing result files under ``results/``."""
