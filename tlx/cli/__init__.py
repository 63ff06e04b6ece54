"""The `tlx` command. Thin: each command parses options, builds a config and calls one
library function. Importing this package (and `tlx --help`) never imports TensorFlow:
commands import their heavy modules inside the function body.

The app lives in tlx.cli.app; each command module adds its command(s) to it when
imported, here, in pipeline order, which is the order `tlx --help` lists them.
"""

from __future__ import annotations

import os

from tlx.cli import train_cmd  # noqa: F401  (the import order is the listing order)
from tlx.cli import sweep_cmd  # noqa: F401
from tlx.cli import export_cmd  # noqa: F401
from tlx.cli import predict_cmd  # noqa: F401
from tlx.cli import bench_cmd  # noqa: F401
from tlx.cli import bundle_cmd  # noqa: F401
from tlx.cli import demo_cmd  # noqa: F401
from tlx.cli import report_cmd  # noqa: F401
from tlx.cli import backbones_cmd  # noqa: F401
from tlx.cli import inspect_cmd  # noqa: F401
from tlx.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    # TensorFlow's C++ start-up chatter (oneDNN, CPU features) is not for our users;
    # TF_CPP_MIN_LOG_LEVEL=0 brings it back.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app()
