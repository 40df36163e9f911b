"""Fitting a planned run: devices and clusters, the Keras fit loop, its callbacks,
checkpoints, optimizers and BatchNorm recalibration."""
