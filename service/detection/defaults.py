"""Detection's defaults, once: the settings (``service.settings``), the stores' policy
(``detection.store.Policy``) and the fingerprint's parameters (``detection.blacklight``) read
them from here. Blacklight's are the reference's (Li et al., USENIX Security 2022, CIFAR-10)."""

from __future__ import annotations

# Blacklight's fingerprint: a sliding window of quantized pixels, its top hashes kept
WINDOW = 20  # values per window (the reference's, for 32x32x3)
LARGE_INPUT = 3072  # beyond this many values (CIFAR-10's), the scaled fingerprint's window is
LARGE_WINDOW = 50  # this one (ImageNet-sized inputs)
KEEP = 50  # hashes kept per query
QUANTIZATION = 50  # rounding step on the 0-255 scale
THRESHOLD = 25  # a match shares more than this many hashes

# the store: what is kept, and how a caller's flags escalate
REPEAT_ALLOWANCE = 0  # repeats of one image not flagged
RETENTION_S = 86400.0  # fingerprints kept
IDS_PER_KEY = 32  # recent queries kept per hash
FLAG_WINDOW_S = 3600.0  # the escalation window W
THROTTLE_AFTER = 20  # flags in W that throttle
SUSPEND_AFTER = 100  # flags in W that suspend
THROTTLE_S = 60.0  # length of a throttle
