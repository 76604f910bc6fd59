"""Training of the zoo's defended checkpoints: L2 PGD and the per-defense recipes.

``python -m service.offline.train --model resnet20-mnist-{rse,pni,pgdat}`` dispatches to
:mod:`~service.offline.training.recipes`; the plain loop and the model card are
:mod:`~service.offline.training.common`.
"""
