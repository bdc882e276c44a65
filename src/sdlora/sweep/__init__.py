"""Hydra sweeps: the job around a training run (run record, user errors, the metric a sweeper minimises) and the
TensorBoard hyperparameters of a run. The sweep summary table is :mod:`sdlora.tools.sweep_summary`."""
