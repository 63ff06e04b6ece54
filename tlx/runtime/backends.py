"""Interpreter backends: a registry of name -> loader.

All three expose the same `Interpreter` API (it is one code base, packaged three ways).
Automatic choice tries ai-edge-litert, then tflite-runtime. TensorFlow is used only when
asked for by name: importing it costs seconds and hundreds of MB, which is what this
runtime exists to avoid, so it is never a silent fallback.
"""

from __future__ import annotations

import functools
import importlib
import re
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from tlx.errors import MissingDependencyError, TlxError


@dataclass(frozen=True)
class Backend:
    """One way to get a TFLite `Interpreter` class."""

    #: Registry key, as given to `--backend`.
    name: str
    #: Module holding the Interpreter class.
    module: str
    #: The pip distribution that provides `module`.
    distribution: str
    #: The tlx-edge install extra that brings it.
    extra: str
    #: Picks the Interpreter class (or a factory with the same arguments) out of the module.
    get_class: Callable[[Any], type]


def _tf_interpreter(module) -> type:
    return module.lite.Interpreter


def _litert_builtin(module):
    # ai-edge-litert without its default XNNPACK delegate: the builtin kernels, which
    # tflite-runtime 2.14 (Raspberry Pi OS Bookworm) also uses for int8. Their rounding
    # differs from XNNPACK's by a few 1/256 steps, so export's parity checks both.
    return functools.partial(module.Interpreter, experimental_op_resolver_type=(
        module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))


BACKENDS: dict[str, Backend] = {
    "litert": Backend("litert", "ai_edge_litert.interpreter", "ai-edge-litert", "runtime",
                      lambda m: m.Interpreter),
    "litert-builtin": Backend("litert-builtin", "ai_edge_litert.interpreter", "ai-edge-litert", "runtime",
                              _litert_builtin),
    "tflite-runtime": Backend("tflite-runtime", "tflite_runtime.interpreter", "tflite-runtime",
                              "tflite", lambda m: m.Interpreter),
    "tensorflow": Backend("tensorflow", "tensorflow", "tensorflow", "train-cpu", _tf_interpreter),
}

#: Tried in this order when no backend is named. Never TensorFlow.
AUTO_ORDER = ("litert", "tflite-runtime")

#: Other spellings people type for the same backends.
ALIASES = {
    "ai-edge-litert": "litert", "ai_edge_litert": "litert",
    "tflite_runtime": "tflite-runtime", "tflite": "tflite-runtime",
    "tf": "tensorflow",
}

#: Accepted as "choose for me".
AUTO = "auto"


def resolve_name(name: str | None) -> str | None:
    """The registry key for `name` (None or 'auto' -> None). Unknown names raise TlxError."""
    if name is None:
        return None
    key = name.strip().lower()
    if key == AUTO:
        return None
    key = ALIASES.get(key, key)
    if key not in BACKENDS:
        raise TlxError(f"unknown backend '{name}'; valid backends: {', '.join(BACKENDS)} "
                       f"(or '{AUTO}' to pick the first installed of {', '.join(AUTO_ORDER)})")
    return key


def _import(backend: Backend):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(backend.module)


def _broken(backend: Backend, exc: Exception) -> TlxError:
    # Installed but failing to import is a different problem from missing: the classic one
    # is tflite-runtime 2.14 (built against numpy 1) next to numpy 2.
    hint = ""
    if "_ARRAY_API" in str(exc) or "numpy" in str(exc).lower():
        hint = " It was built for another numpy major version: pip install 'numpy<2'."
    return TlxError(f"the {backend.name} backend ({backend.distribution}) is installed but "
                    f"fails to import: {exc}.{hint}")


def interpreter_class(name: str | None = None) -> tuple[str, type]:
    """(backend name, Interpreter class) for `name`, or the first installed in AUTO_ORDER."""
    key = resolve_name(name)
    if key is not None:
        backend = BACKENDS[key]
        try:
            module = _import(backend)
        except ModuleNotFoundError as exc:
            if exc.name and backend.module.startswith(exc.name.split(".")[0]):
                raise MissingDependencyError(f"The {key} backend", backend.extra) from None
            raise _broken(backend, exc) from None
        except ImportError as exc:
            raise _broken(backend, exc) from None
        return key, backend.get_class(module)

    errors = []
    for key in AUTO_ORDER:
        backend = BACKENDS[key]
        try:
            return key, backend.get_class(_import(backend))
        except ModuleNotFoundError as exc:
            if exc.name and backend.module.startswith(exc.name.split(".")[0]):
                continue
            errors.append(str(_broken(backend, exc)))
        except ImportError as exc:
            errors.append(str(_broken(backend, exc)))
    if errors:
        raise TlxError("no usable TFLite interpreter backend:\n  " + "\n  ".join(errors))
    raise TlxError(
        "no TFLite interpreter backend is installed. Install one of:\n"
        "  pip install 'tlx-edge[runtime]'   # ai-edge-litert (preferred, fastest int8)\n"
        "  pip install 'tlx-edge[tflite]'    # tflite-runtime 2.14 (Raspberry Pi OS Bookworm)"
    )


def create_interpreter(model: bytes, num_threads: int | None = None,
                       backend: str | None = None) -> tuple[str, Any]:
    """(backend name, an Interpreter with tensors allocated) for already-validated model bytes."""
    if num_threads is not None and int(num_threads) < 1:
        raise TlxError(f"num_threads must be 1 or more, not {num_threads}")
    name, cls = interpreter_class(backend)
    kwargs = {"model_content": bytes(model)}
    if num_threads is not None:
        kwargs["num_threads"] = int(num_threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        try:
            interpreter = cls(**kwargs)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise TlxError(f"the {name} interpreter cannot load the model: "
                           f"{interpreter_message(exc)}") from None
    return name, interpreter


#: How the interpreter's messages begin (those that follow another one without a break).
_MESSAGE_START = re.compile(r"(?<=[a-z0-9.)])(?=(?:unsupported|mismatching|Failed|failed|Node number|"
                            r"XNNPack|Restored|Ignoring)\b)")


def interpreter_message(exc: BaseException) -> str:
    """The interpreter's error text, one message per clause. TFLite's error reporter joins
    the messages it collected without a separator ("... in XNNPACK delegateunsupported
    datatype ..."); "; " goes back between them."""
    return _MESSAGE_START.sub("; ", str(exc).strip())


def installed_backends() -> list[str]:
    """Registry keys of the device backends (not TensorFlow) whose package is installed,
    in registry order. Found without importing them."""
    import importlib.util

    return [name for name, backend in BACKENDS.items() if name != "tensorflow"
            and importlib.util.find_spec(backend.module.split(".")[0]) is not None]
