"""Weight files into Keras models, every shape checked before anything is assigned.

A leaf module: the backbone registry (tlx.trainer.backbones) and the EfficientNet-Lite0
builder (tlx.trainer.efficientnet_lite) both load weights through it, and it imports
neither. Importing it does not import TensorFlow (h5py only when a file is read).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tlx.errors import TlxError

#: Values of BackboneSpec.weights_status() / `tlx backbones`' status column.
STATUS_OFFLINE = "offline"            # usable now without a network (installed package)
STATUS_CACHED = "cached"              # downloaded or converted before, reused as is
STATUS_DOWNLOAD = "download"          # first use needs a download that may be unreachable here
STATUS_MISSING = "missing package"    # the package that provides builder or weights is not installed


def load_weights_file(model, path) -> None:
    """Load a Keras weights file into `model`, naming the first layer that does not fit.

    Reads the whole file and compares every layer's shapes before assigning anything, so
    a file that does not fit leaves the model as it was. Understands both layouts: Keras 3
    `.weights.h5` (what `model.save_weights` writes) and the Keras 2 HDF5 layout of the
    files keras.applications downloads (e.g. copied from ~/.keras/models of another machine).
    """
    path = Path(path)
    if not path.is_file():
        raise TlxError(f"--weights {path}: no such file. Use imagenet, none or a .weights.h5 path.")
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "layers" in f:
                plan = _plan_keras3(model, f, path)
            else:
                plan = _plan_legacy(model, f.get("model_weights", f), path)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise TlxError(f"--weights {path}: not a readable Keras weights file "
                       f"({type(exc).__name__}: {exc}).") from None
    for assign, arrays in plan:
        assign(arrays)


def _does_not_fit(path, layer, expected, got) -> TlxError:
    return TlxError(f"--weights {path} does not fit the backbone: layer '{layer.name}' expects "
                    f"shapes {expected}, the file has {got}.")


def _plan_keras3(model, f, path):
    """Keras 3 layout: layers/<snake class name>[_<n>]/vars/<i>, in model.layers order
    (the names Keras' saving_lib gives, which do not depend on the layers' own names)."""
    import re

    used: dict[str, int] = {}
    plan = []
    for layer in model.layers:
        cls = re.sub(r"\W+", "", type(layer).__name__)
        cls = re.sub("([a-z])([A-Z])", r"\1_\2", re.sub("(.)([A-Z][a-z]+)", r"\1_\2", cls)).lower()
        used[cls] = used.get(cls, -1) + 1
        key = cls if used[cls] == 0 else f"{cls}_{used[cls]}"
        variables: dict = {}
        layer.save_own_variables(variables)
        if not variables:
            continue
        expected = [tuple(variables[str(i)].shape) for i in range(len(variables))]
        group = f.get(f"layers/{key}/vars")
        got = [] if group is None else [tuple(group[str(i)].shape) for i in range(len(group))]
        if got != expected:
            raise _does_not_fit(path, layer, expected, got or "no weights for it")
        arrays = {str(i): group[str(i)][()] for i in range(len(group))}
        plan.append((layer.load_own_variables, arrays))
    return plan


def _plan_legacy(model, group, path):
    """Keras 2 layout: layers with weights paired in order, as Keras' legacy loader pairs them."""

    def text(value):
        return value.decode("utf8") if isinstance(value, bytes) else str(value)

    if "layer_names" not in group.attrs:
        raise TlxError(f"--weights {path}: an HDF5 file but not Keras weights (no layers).")
    stored = []
    for name in (text(n) for n in group.attrs["layer_names"]):
        weight_names = [text(n) for n in group[name].attrs.get("weight_names", [])]
        if weight_names:
            stored.append([group[name][w] for w in weight_names])
    plan = []
    layers = [layer for layer in model.layers if layer.weights]
    for i, layer in enumerate(layers):
        expected = [tuple(v.shape) for v in layer.trainable_weights + layer.non_trainable_weights]
        got = [tuple(d.shape) for d in stored[i]] if i < len(stored) else "no weights for it"
        if got != expected:
            raise _does_not_fit(path, layer, expected, got)
        plan.append((layer.set_weights, [d[()] for d in stored[i]]))
    if len(stored) > len(layers):
        raise TlxError(f"--weights {path} does not fit the backbone: the file has weights for "
                       f"{len(stored)} layers, the backbone {len(layers)}.")
    return plan


def assign_weights(model, weights: dict[str, list[np.ndarray]], source: str) -> None:
    """Set every weighted layer of `model` from `weights` ({layer name: arrays}).

    All shapes are compared before anything is assigned, so a file that does not fit leaves
    the model untouched; the error names the first layer (in model order) that does not fit.
    Entries for layers the model lacks (e.g. the ImageNet head for a feature extractor) are ignored.
    """
    plan = []
    for layer in model.layers:
        expected = [tuple(v.shape) for v in layer.weights]
        if not expected:
            continue
        arrays = weights.get(layer.name)
        if arrays is None:
            raise TlxError(f"{source} does not fit the backbone: no weights for layer '{layer.name}' "
                           f"(expects shapes {expected}).")
        got = [tuple(np.shape(a)) for a in arrays]
        if got != expected:
            raise TlxError(f"{source} does not fit the backbone: layer '{layer.name}' expects shapes "
                           f"{expected}, the file has {got}.")
        plan.append((layer, arrays))
    for layer, arrays in plan:
        layer.set_weights(arrays)
