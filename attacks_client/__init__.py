"""Black-box attack client: query-based attacks against a /predict endpoint over HTTP."""

__version__ = "0.1.0"
