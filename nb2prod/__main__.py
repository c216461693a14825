"""``python -m nb2prod``: the command line."""

from nb2prod.cli import main

main()
