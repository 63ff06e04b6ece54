"""`python -m tlx` and the `tlx` command.

Only the signal handlers come first (tlx.interrupts, standard library): a Ctrl-C while the
command's modules are still being imported is then a clean stop too, not a traceback.
"""

from tlx import interrupts


def main() -> None:
    def command() -> None:
        from tlx.cli import main as cli_main

        cli_main()

    interrupts.run(command)


if __name__ == "__main__":
    main()
