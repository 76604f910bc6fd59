"""``python -m attacks_client``: see :mod:`attacks_client.cli`."""

from attacks_client.cli import entry

if __name__ == "__main__":
    entry()
