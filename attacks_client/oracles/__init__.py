"""Oracles: the only view an attack has of the model (the bottom layer of the client).

:class:`Oracle` is the protocol (labels, scores, a query count), :class:`HttpOracle` a gateway's
``/predict`` over HTTP, :class:`OipOracle` any Open Inference Protocol (v2) server
(:func:`open_oracle` picks one for a URL), :class:`FunctionOracle` an in-process function;
the wrappers repeat each query T times (:class:`RepeatOracle`, the adaptive attack), add the
attacker's own noise (:class:`JitterOracle`, against stateful detection) or keep a sample of
the queries (:class:`RecordingOracle`); :class:`ArtBridge` shows any oracle to ART.
"""

from attacks_client.oracles.art import ArtBridge, art_classifier
from attacks_client.oracles.base import (
    BudgetExhausted,
    FunctionOracle,
    Oracle,
    OracleError,
    OracleWrapper,
    Refused,
    ScoresUnavailable,
)
from attacks_client.oracles.factory import open_oracle
from attacks_client.oracles.http import HttpOracle
from attacks_client.oracles.jitter import JitterOracle
from attacks_client.oracles.oip import OipOracle
from attacks_client.oracles.recording import RecordingOracle
from attacks_client.oracles.repeat import RepeatOracle
from attacks_client.oracles.sharing import SharedRequests

__all__ = [
    "ArtBridge",
    "BudgetExhausted",
    "FunctionOracle",
    "HttpOracle",
    "JitterOracle",
    "Oracle",
    "OracleError",
    "OipOracle",
    "OracleWrapper",
    "RecordingOracle",
    "Refused",
    "RepeatOracle",
    "ScoresUnavailable",
    "SharedRequests",
    "art_classifier",
    "open_oracle",
]
