"""`tlx backbones`: the registry, and whether each backbone's pretrained weights are usable now.

Registry metadata only: this command never imports TensorFlow.
"""

from __future__ import annotations


import typer

from tlx.cli import options
from tlx.cli.app import command
from tlx.cli.common import print_json, user_errors

COLUMNS = ("name", "image size", "fine-tune at", "normalization", "weights", "weights source")


def backbone_rows() -> list[dict]:
    from tlx.trainer.backbones import BACKBONES

    rows = []
    for name, spec in BACKBONES.items():
        norm = spec.normalization
        rows.append({
            "name": name,
            "default_image_size": spec.default_image_size,
            "default_fine_tune_at": spec.default_fine_tune_at,
            "normalization": {"scale": norm.scale, "offset": norm.offset,
                              "mean": norm.mean, "std": norm.std},
            "weights_status": spec.weights_status(),
            "weights_source": spec.weights_source,
            "description": spec.description,
        })
    return rows


def _table(rows: list[dict]) -> str:
    cells = [COLUMNS] + [
        (r["name"], str(r["default_image_size"]), str(r["default_fine_tune_at"]),
         f"(x - {r['normalization']['mean']:g}) / {r['normalization']['std']:g}",
         r["weights_status"], r["weights_source"])
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS) - 1)]
    lines = ["  ".join([c.ljust(w) for c, w in zip(row, widths)] + [row[-1]]).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * len(COLUMNS[-1]))
    legend = ("weights (for --weights imagenet): offline = installed, usable without a network; "
              "cached = reused from an earlier download or conversion; download = needs a host that "
              "may be unreachable; missing package = install it first.")
    return "\n".join(lines) + "\n\n" + legend


@command("backbones", short_help="List the backbones and whether their weights are usable now.")
def backbones(
    as_json: options.Json = False,
) -> None:
    """List the backbones: default image size, fine-tune-at layer, input normalization, and
    where their pretrained weights come from and whether they are usable now.

    --json prints a list, one object per backbone: "name", "default_image_size",
    "default_fine_tune_at", "normalization" ("scale", "offset", "mean", "std"),
    "weights_status", "weights_source", "description"."""
    with user_errors():
        rows = backbone_rows()
        if as_json:
            print_json(rows)
        else:
            typer.echo(_table(rows))
