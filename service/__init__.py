"""SND gateway: a FastAPI inference service behind Small Noise Defense."""

__version__ = "0.1.0"
