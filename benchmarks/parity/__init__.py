"""Attack parity with ART: ours next to the implementation the SND paper ran, side by side.

``python -m benchmarks.parity`` attacks the same correctly classified images with the same
budget, over HTTP, once with this project's attack and once with ART 1.20.1's (through
``attacks_client.oracles.ArtBridge``), against endpoints without defense and behind SND, and
judges both by one rule (docs/attacking/protocol.md: the defended endpoint's majority of noisy
draws; and the noise-free h). It writes ``docs/results/parity.md``.
"""
