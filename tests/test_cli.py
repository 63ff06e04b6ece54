"""The CLI reads as one tool: every command's --help has plain metavars and documents every
option's default; options several commands take are the same option everywhere; --json on
bundle and report prints what a script needs."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import typer.main
from typer.testing import CliRunner

from tests.test_bench import exported_run  # noqa: F401  (module-scoped fixture)
from tests.test_report import benched_run  # noqa: F401  (module-scoped fixture)
from tlx.cli import app, options
from tlx.run_dir import REPORT

runner = CliRunner()
GROUP = typer.main.get_command(app)
COMMANDS = sorted(GROUP.commands)

#: Options that several commands take, and the one help text each has everywhere.
SHARED_HELP = {
    "--json": options.JSON_HELP, "--threads": options.THREADS_HELP, "--backend": options.BACKEND_HELP,
    "--max-drop": options.MAX_DROP_HELP, "--max-drop-on": options.MAX_DROP_ON_HELP,
    "--data-dir": options.DATA_DIR_HELP,
    "--image-size": options.IMAGE_SIZE_HELP, "--phase1-epochs": options.PHASE1_EPOCHS_HELP,
    "--phase2-epochs": options.PHASE2_EPOCHS_HELP,
}
#: Typer's own type labels and usage braces, which the help must not show.
ARTEFACTS = re.compile(r"<(path|str|int|float|bool|text|file|choice)( range)?>|<[^<>\s]*\|[^<>\s]*>|list\[|\{|\}")
#: The "[default: ...; x>=1]" tail typer appends to an option's help.
DEFAULT_TAIL = re.compile(r"\s*\[(default: [^\]]*|[^\]]*x[<>]=[^\]]*)\]$")


def _records(name: str) -> dict[str, tuple[object, str, str]]:
    """Each option of command `name` (not --help): its long name -> (param, name column, help)."""
    command = GROUP.commands[name]
    ctx = command.make_context(name, [], resilient_parsing=True)
    records = {}
    for param in command.get_params(ctx):
        if param.param_type_name != "option" or param.name == "help":
            continue
        column, text = param.get_help_record(ctx)
        long_name = next(opt for opt in param.opts if opt.startswith("--"))
        records[long_name] = (param, column, text)
    return records


def _signature(param) -> tuple:
    """What must be the same wherever an option appears: spelling, metavar, type, bounds."""
    return param.opts, param.metavar, param.type_descriptor.annotation, getattr(param, "min", None)


def test_every_command_is_covered():
    assert set(COMMANDS) == {"train", "sweep", "export", "predict", "bench", "bundle", "demo", "report",
                             "backbones", "inspect"}


@pytest.mark.parametrize("name", COMMANDS)
def test_help_is_plain_and_documents_every_default(name):
    result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    assert not ARTEFACTS.search(result.output), ARTEFACTS.search(result.output).group(0)
    usage = result.output.splitlines()[0]
    assert usage.startswith("Usage: ") and "{" not in usage
    for option, (param, column, text) in _records(name).items():
        flag_only = param.is_flag and not param.secondary_opts  # off unless given
        if not flag_only:
            documented = re.search(r"\b(default|required)\b", text, re.IGNORECASE)
            assert documented, f"{name} {option}: no default in {text!r}"
        if not param.is_flag:
            assert param.metavar, f"{name} {option}: no metavar"
        if option == "--out":
            assert "-o" in param.opts, f"{name} --out has no -o"
    # Every command but the listings can be stopped, and says so with its exit codes.
    if name not in ("backbones",):
        assert "Exit codes:" in result.output
    if name not in ("backbones", "inspect"):
        assert "130 interrupted by Ctrl-C" in " ".join(result.output.split())


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_json_as_as_json(name):
    param, _, text = _records(name)["--json"]
    assert param.name == "as_json" and param.is_flag


def test_shared_options_are_one_option_everywhere():
    seen: dict[str, list[tuple[str, object, str]]] = {}
    for name in COMMANDS:
        for option, (param, _, text) in _records(name).items():
            seen.setdefault(option, []).append((name, param, DEFAULT_TAIL.sub("", text)))
    for option, expected in SHARED_HELP.items():
        uses = seen[option]
        assert len(uses) >= 2, f"{option} is not shared"
        for name, param, text in uses:
            assert text == expected, f"{name} {option}: {text!r}"
        first = _signature(uses[0][1])
        for name, param, _ in uses[1:]:
            assert _signature(param) == first, f"{name} {option}"
    # --out: the same spelling wherever a command writes somewhere of its choosing.
    outs = [name for name in COMMANDS if "--out" in _records(name)]
    assert set(outs) == {"train", "sweep", "export", "bench", "bundle", "demo"}


def test_image_size_has_one_minimum():
    for name in ("train", "demo"):
        result = runner.invoke(app, [name, "--image-size", "16", "somewhere"] if name == "train"
                               else [name, "--image-size", "16"])
        assert result.exit_code == 2 and "--image-size" in result.output and "32" in result.output
    result = runner.invoke(app, ["sweep", "somewhere", "--out", "x", "--image-sizes", "96,16"])
    assert result.exit_code == 2 and "from 32 to" in result.output


@pytest.mark.parametrize("args, words", [
    (["bench", "somewhere", "--threads", "one"], "thread counts"),
    (["bench", "somewhere", "--threads", "0"], "1 or more"),
    (["bench", "somewhere", "--backend", "onnx"], "unknown backend 'onnx'"),
    (["bench", "somewhere", "--backend", "litert,tflite-runtime"], "one backend here"),
    (["predict", "m.tflite", "x.jpg", "--threads", "1,2"], "one thread count here"),
    (["predict", "m.tflite", "x.jpg", "--threads", "two"], "thread counts"),
    (["predict", "m.tflite", "x.jpg", "--backend", "onnx"], "unknown backend 'onnx'"),
    (["predict", "m.tflite", "x.jpg", "--backend", "litert,tflite-runtime"], "one backend here"),
])
def test_threads_and_backend_are_checked_alike(args, words):
    """Checked before any file is read: a usage error (2) naming the option."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert words in result.output and ("--threads" in result.output or "--backend" in result.output)
    assert "Traceback" not in result.output


def test_backend_names_accept_auto_and_the_aliases():
    assert options.backend_names("auto", one=True) == ("auto",)
    assert options.backend_names(" tflite , litert-builtin ") == ("tflite", "litert-builtin")
    assert options.thread_counts("1, 2,4") == (1, 2, 4)


def test_predict_takes_one_thread_count_in_bench_syntax(exported_run, tmp_path):  # noqa: F811
    images = sorted((exported_run.parent / "data").rglob("*.png"))[:2]
    model = exported_run / "export" / "model_int8.tflite"
    result = runner.invoke(app, ["predict", str(model), *map(str, images), "--threads", "2", "--backend",
                                 "auto", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert len(doc["results"]) == 2 and all(r["predictions"] for r in doc["results"])


def test_bundle_json_is_the_summary(exported_run, tmp_path):  # noqa: F811
    out = tmp_path / "b.zip"
    result = runner.invoke(app, ["bundle", str(exported_run), "-o", str(out), "--max-images", "3", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["path"] == str(out) and doc["size_bytes"] == out.stat().st_size
    assert doc["models"] == ["float32", "int8"] and doc["images"] == 3
    assert doc["host_backends"] and doc["skipped"] == []


def test_report_json_says_where_and_whether_complete(benched_run, tmp_path):  # noqa: F811
    result = runner.invoke(app, ["report", str(benched_run), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"report": str(benched_run / REPORT), "complete": True, "missing": []}

    run = tmp_path / "run"
    shutil.copytree(benched_run, run, ignore=shutil.ignore_patterns("bench", "checkpoints"))
    result = runner.invoke(app, ["report", str(run), "--json"])
    assert result.exit_code == 3, result.output  # written, incomplete
    doc = json.loads(result.stdout)
    assert doc["report"] == str(run / REPORT) and (run / REPORT).is_file()
    assert doc["complete"] is False and "benchmark" in doc["missing"]


def test_report_json_on_an_error_prints_nothing(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path), "--json"])
    assert result.exit_code == 1 and result.stdout == "" and "split.json" in result.stderr
