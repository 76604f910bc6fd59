"""Black-box attack client: query-based attacks against an SND gateway over HTTP.

Layers, each importing only those below it: :mod:`~attacks_client.cli` (the command line) →
:mod:`~attacks_client.evaluation` (experiments, the grid, reports) →
:mod:`~attacks_client.attacks` (the paper's eight attacks and
the ones beyond it) → :mod:`~attacks_client.oracles` (the model
as a black box: HTTP, wrappers, the ART adapter); :mod:`~attacks_client.data` loads images.

    from attacks_client import HttpOracle, get_attack
    from attacks_client.data import load_images

    images = load_images("embedded")
    with HttpOracle("http://127.0.0.1:8000") as oracle:
        result = get_attack("hsja")()(oracle, images.images[1], int(images.labels[1]), 1000)
    print(result.queries, result.l2_at(1000))
"""

from attacks_client.attacks import ATTACKS, Attack, AttackResult, get_attack
from attacks_client.evaluation import Experiment, evaluate
from attacks_client.oracles import HttpOracle, OipOracle, open_oracle

__version__ = "0.1.0"

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackResult",
    "Experiment",
    "HttpOracle",
    "OipOracle",
    "evaluate",
    "get_attack",
    "open_oracle",
]
