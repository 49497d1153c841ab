"""``python -m gateway`` is the ``helpdesk`` command."""

from gateway.cli import main

main()
