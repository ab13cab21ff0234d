"""``python -m vitbook.bench``: see :mod:`vitbook.bench.cli`."""

from .cli import main

main()
