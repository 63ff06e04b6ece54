"""`python -m tlx` and the `tlx` command.

Only the signal handlers come first (tlx.interrupts, standard library): a Ctrl-C while the
command's modules are still being imported is then a clean stop too, not a traceback.
"""

from tlx import interrupts


def _load_command():
    from tlx.cli import main as cli_main

    return cli_main


def main() -> None:
    interrupts.run(_load_command)


if __name__ == "__main__":
    main()
