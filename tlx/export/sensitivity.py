"""How much int8 costs each quantized tensor, and which tensors to keep in float together.

Why the ranking metric is not RMSE / scale alone: rmse/scale (the metric of TensorFlow's
debugger tutorial) flags ops whose rounding goes wrong, but the common int8 collapse is a
tensor whose per-tensor range is set by a few outlier channels, so the step is larger than
the values of the channels that carry the signal: they round to zero with an error far
*below* one step, and rmse/scale calls the tensor fine. `channel_error` measures what is
lost per channel instead: the mean, over the tensor's channels (last axis), of
||dequantized - float|| / ||float||. 0 is exact; 1 means the channel is gone. Both metrics
go into the CSV.

Why a layer's consumers are kept in float with it: keeping an op in float only makes its
output tensor float. A quantized op that reads it quantizes it again with the same
calibrated range and loses the same channels. So a step keeps the sensitive tensor's
producer *and* its readers in float; the readers' outputs get their own (sane) ranges.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

import numpy as np

from tlx.export.convert import no_interpreter_warning
from tlx.runtime import flatbuffer

#: Ranking metrics: name -> LayerError attribute.
METRICS = ("channel_error", "rmse_over_scale")

#: Ops whose int8 output range is fixed by the kernel (softmax: scale 1/256), not by
#: calibration: keeping them in float cannot fix a range, and tiny probabilities rounding to
#: zero (channel_error near 1 in a healthy model) do not change the top-1 class. Not ranked.
FIXED_RANGE_OPS = frozenset({"SOFTMAX", "LOG_SOFTMAX", "LOGISTIC", "TANH", "QUANTIZE",
                             "DEQUANTIZE"})


@dataclass(frozen=True)
class LayerError:
    """One quantized tensor (an op's output) and how much int8 costs it on calibration data."""

    #: 1 = the most sensitive.
    rank: int
    #: A readable layer name derived from the tensor name (the Keras layer, suffixes dropped).
    layer: str
    #: The op that produces the tensor (CONV_2D, FULLY_CONNECTED, ...).
    op: str
    #: The tensor name in the converted model: the `denylisted_nodes` key.
    tensor: str
    #: Mean over channels of ||dequantized - float|| / ||float|| (0 exact, 1 channel lost).
    channel_error: float
    #: sqrt(mean squared error) / quantization scale (TensorFlow's tutorial metric).
    rmse_over_scale: float
    mean_squared_error: float
    max_abs_error: float
    scale: float
    zero_point: int


def channel_error(float_values: np.ndarray, quantized: np.ndarray, scale: float,
                  zero_point: int) -> float:
    """Mean over channels (last axis) of ||dequantized - float|| / ||float|| for one tensor.

    A QuantizationDebugger `layer_direct_compare_metrics` function: it gets the float op's
    output and the quantized op's output (integers) for the same quantized input.
    All-zero channels (e.g. dead ReLUs) carry nothing and are left out.
    """
    err, norm = _channel_sums(float_values, quantized, scale, zero_point)
    return _ratio(err, norm)


def _channel_sums(float_values, quantized, scale, zero_point) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: (sum of squared errors, sum of squared float values)."""
    f = np.asarray(float_values, dtype=np.float64)
    q = (np.asarray(quantized).astype(np.float64) - float(zero_point)) * float(scale)
    channels = f.shape[-1] if f.ndim >= 2 else 1
    f = f.reshape(-1, channels)
    d = q.reshape(-1, channels) - f
    return np.sum(d * d, axis=0), np.sum(f * f, axis=0)


def _ratio(err: np.ndarray, norm: np.ndarray) -> float:
    live = norm > 0
    if not live.any():
        return 0.0
    return float(np.mean(np.sqrt(err[live] / norm[live])))


class ChannelSums:
    """channel_error over the whole debug set rather than averaged per image.

    Per image, a pooled feature that is near zero for this image (the wrong class) rounds to
    zero and looks lost; over the set, its norm comes from the images where it is large, and
    only channels that are small *everywhere* (drowned by an outlier channel) stay lost.

    The debugger calls the metric per image and per instrumented tensor, in a fixed order
    (images outer, tensors inner, the order of its layer_statistics). The sums are matched to
    tensors by that order; if the call count does not fit it, `per_tensor` returns None and
    the debugger's per-image mean is used instead.
    """

    def __init__(self):
        self.calls: list[tuple[np.ndarray, np.ndarray, float]] = []

    def __call__(self, float_values, quantized, scale, zero_point) -> float:
        err, norm = _channel_sums(float_values, quantized, scale, zero_point)
        self.calls.append((err, norm, float(scale)))
        return _ratio(err, norm)

    def per_tensor(self, tensors: int, images: int) -> list[float] | None:
        if tensors == 0 or len(self.calls) != tensors * images:
            return None
        out = []
        for t in range(tensors):
            calls = self.calls[t::tensors]
            if len({(c[0].shape, c[2]) for c in calls}) != 1:
                return None  # not one tensor: the call order is not what we assumed
            out.append(_ratio(sum(c[0] for c in calls), sum(c[1] for c in calls)))
        return out


def layer_name(tensor: str) -> str:
    """A readable layer name from a converted tensor name: the deepest Keras layer scope
    (Keras 3 traces layer `name` under a `name_1` scope), e.g.
    'functional_1/efficientnet_lite0_1/block1a_project_bn_1/batchnorm/add_1;...'
    -> 'block1a_project_bn'."""
    first = tensor.split(";")[0]
    parts = [p for p in first.split("/") if p]
    if len(parts) < 3:
        return parts[-1] if parts else tensor
    scopes = [p for p in parts[1:-1] if re.search(r"_\d+$", p)]
    name = scopes[-1] if scopes else parts[-2]
    return re.sub(r"_\d+$", "", name)


def rank_layers(debugger, graph: "Graph", metric: str,
                 channel_errors: list[float] | None) -> list[LayerError]:
    buffer = io.StringIO()
    with no_interpreter_warning():
        debugger.layer_statistics_dump(buffer)
    rows = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    if channel_errors is not None and len(channel_errors) == len(rows):
        # The dump walks layer_statistics in the order the metric saw the tensors.
        for row, value in zip(rows, channel_errors):
            row["channel_error"] = value
    found = []
    for row in rows:
        tensor = graph.resolve(row["tensor_name"])
        if tensor is None or row["op_name"] in FIXED_RANGE_OPS:
            continue  # a debugger-only tensor; cannot be denylisted by name
        scale = float(row["scale"])
        mse = float(row["mean_squared_error"])
        found.append(dict(
            layer=layer_name(tensor), op=row["op_name"], tensor=tensor,
            channel_error=_finite(row.get("channel_error")),
            rmse_over_scale=_finite(np.sqrt(mse) / scale if scale > 0 else 0.0),
            mean_squared_error=_finite(mse), max_abs_error=_finite(row["max_abs_error"]),
            scale=scale, zero_point=int(float(row["zero_point"]))))
    found.sort(key=lambda r: (-r[metric], -r["rmse_over_scale" if metric == "channel_error"
                                            else "channel_error"], r["tensor"]))
    return [LayerError(rank=i + 1, **r) for i, r in enumerate(found)]


def _finite(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 0.0
    return value if np.isfinite(value) else 0.0


def groups(layers: list[LayerError], graph: "Graph"):
    """(layer, [its tensor and its readers' outputs]) in rank order; layers whose whole group
    is already covered by earlier ones are skipped (they would add nothing)."""
    covered: set[str] = set()
    for layer in layers:
        group = [layer.tensor] + graph.reader_outputs(layer.tensor)
        if set(group) <= covered:
            continue
        covered.update(group)
        yield layer, group


class Graph:
    """Tensor names and which ops read them, from the calibrated (float) model."""

    def __init__(self, model: bytes):
        subgraph = flatbuffer.model_root(model).tables("subgraphs")[0]
        self.names = [t.string("name") or "" for t in subgraph.tables("tensors")]
        self._readers: dict[int, list[list[int]]] = {}
        for op in subgraph.tables("operators"):
            outputs = [i for i in (op.vector("outputs") or []) if i >= 0]
            for i in op.vector("inputs") or []:
                if i >= 0:
                    self._readers.setdefault(i, []).append(outputs)
        self._index = {name: i for i, name in enumerate(self.names)}

    def resolve(self, debugger_name: str) -> str | None:
        """The model's tensor name for a name from the debugger's dump (which strips one
        trailing digit when the name ends in one)."""
        if debugger_name in self._index:
            return debugger_name
        for digit in "0123456789":
            if debugger_name + digit in self._index:
                return debugger_name + digit
        return None

    def reader_outputs(self, name: str) -> list[str]:
        index = self._index.get(name)
        out: list[str] = []
        for outputs in self._readers.get(index, []):
            out.extend(self.names[i] for i in outputs if self.names[i] not in out)
        return out
