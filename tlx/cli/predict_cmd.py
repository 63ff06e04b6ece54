"""`tlx predict`: classify images with a .tflite model, without TensorFlow."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from tlx.cli.app import app
from tlx.cli.common import print_json, user_errors
from tlx.runtime.backends import AUTO, BACKENDS


#: Interpreter backends for --backend: "auto" and the registry keys (light to import:
#: the registry names modules, it does not import them).
BackendChoice = Enum("BackendChoice", {name: name for name in (AUTO, *BACKENDS)}, type=str)


@app.command("predict")
def predict(
    model: Annotated[Path, typer.Argument(help="The .tflite model (from `tlx export`).",
                                          show_default=False)],
    images: Annotated[List[Path], typer.Argument(
        help="Image files and/or folders (folders are searched recursively for images).",
        show_default=False)],
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="How many classes to show per image.")] = 3,
    threads: Annotated[Optional[int], typer.Option(
        "--threads", min=1, help="Interpreter threads (default: the backend's choice).")] = None,
    backend: Annotated[BackendChoice, typer.Option(
        "--backend", case_sensitive=False,
        help="Interpreter: auto = ai-edge-litert if installed, else tflite-runtime. "
             "TensorFlow only when named.")] = BackendChoice.auto,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")] = False,
    fast_jpeg: Annotated[bool, typer.Option(
        "--fast-jpeg", help="Decode large JPEGs at reduced scale first: faster, pixels within "
                            "about 1 level of 255 of the full decode (not bit-identical).")] = False,
) -> None:
    """Classify images with a TFLite model: a table per image (or --json).

    A file that cannot be read prints its error and the others still print; the exit code
    is 1 if any file failed.
    """
    with user_errors():
        from tlx.runtime import Classifier

        clf = Classifier.from_file(model, num_threads=threads, backend=backend.value,
                                   fast_decode=fast_jpeg)
        failed = total = 0
        results = []
        for result in clf.classify_files(images, top_k=top_k):
            total += 1
            if not result.ok:
                failed += 1
            if as_json:
                results.append(result.to_dict())
            else:
                _print_table(result)
        if as_json:
            print_json({"model": str(model), "backend": clf.backend,
                        "labels": clf.labels is not None, "results": results})
        if total == 0:
            typer.secho("No images found in the given folders.", fg=typer.colors.RED, err=True)
            raise typer.Exit(1)
        if failed:
            typer.secho(f"{failed} file(s) failed.", fg=typer.colors.RED, err=True)
            raise typer.Exit(1)


def _print_table(result) -> None:
    if not result.ok:
        reason = getattr(result.error, "reason", None) or str(result.error)
        typer.secho(f"{result.path}: error: {reason}", fg=typer.colors.RED, err=True)
        return
    width = max([5] + [len(p.name) for p in result.predictions])
    lines = [result.path, f"  {'#':>2}  {'label':<{width}}  {'score':>7}  index"]
    for rank, p in enumerate(result.predictions, 1):
        lines.append(f"  {rank:>2}  {p.name:<{width}}  {p.score:>7.4f}  {p.index:>5}")
    typer.echo("\n".join(lines))
