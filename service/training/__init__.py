"""Training of the zoo's defended checkpoints: L2 PGD and the per-defense recipes.

``python -m service.train --model resnet20-mnist-{rse,pni,pgdat}`` dispatches here; the plain
``resnet20-mnist`` path of :mod:`service.train` is untouched.
"""
