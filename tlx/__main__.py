"""`python -m tlx` is the `tlx` command."""

from tlx.cli import main

main()
