"""HTTP layer: thin routers over the runtime."""
