"""``python -m spoolq``: the same as the ``spoolq`` command."""

from spoolq.cli import main

main()
