"""tf.distribute strategies, and what training on several machines needs around them.

`--strategy multi-worker` is tf.distribute.MultiWorkerMirroredStrategy: every machine
runs the same `tlx train` command with its own TF_CONFIG (the cluster's host:port list
and its own index). Worker 0 is the chief: it alone writes the run dir; the others write
their checkpoints to a temporary folder of their own (every worker must save, since a
save reads values that all of them hold) and delete it at the end.

Each worker decodes the data folder into its own pixel cache (the split is computed the
same way on each from the same files) and, per step, gathers only its share of the
global batch: a shuffle with the same seed on every worker, the batch of
--batch-size rows, then rows i, i + n, i + 2n... go to worker i of n. The number of
steps per epoch is the one of a single machine with the same --batch-size.

Keras 3.15's fit() under MultiWorkerMirroredStrategy fails in two places
(keras-team/keras#20585): it reduces the first batch, a tuple, with strategy.reduce
(which only takes one tensor for this strategy), and it reduces each scalar metric with
axis=0. `patch_keras_for_multi_worker` works around both; nothing changes for the other
strategies.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

from tlx.errors import TlxError
from tlx.trainer.config import Strategy

TF_CONFIG = "TF_CONFIG"


@dataclass(frozen=True)
class Cluster:
    """This process's place in a multi-worker cluster, from TF_CONFIG."""

    #: Number of workers.
    workers: int
    #: This worker's index (0 is the chief).
    index: int

    @property
    def is_chief(self) -> bool:
        return self.index == 0


def cluster(strategy: Strategy, environ=os.environ) -> Optional[Cluster]:
    """The cluster for --strategy multi-worker (TlxError when TF_CONFIG is missing or
    malformed), None for the other strategies."""
    if Strategy(strategy) is not Strategy.MULTI_WORKER:
        return None
    example = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}')
    raw = environ.get(TF_CONFIG)
    if not raw:
        raise TlxError("--strategy multi-worker needs the TF_CONFIG environment variable on every "
                       f"machine, for example {example} (index 1 on the second machine). "
                       "See the README section \"More than one machine\".")
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task = config["task"]
        index = int(task["index"])
        if not isinstance(workers, list) or not workers or not all(isinstance(w, str) for w in workers):
            raise ValueError("cluster.worker must be a list of host:port strings")
        if task.get("type") != "worker" or not 0 <= index < len(workers):
            raise ValueError(f"task must be {{\"type\": \"worker\", \"index\": 0..{len(workers) - 1}}}")
        if set(config["cluster"]) != {"worker"}:
            raise ValueError("only \"worker\" tasks are used (worker 0 is the chief)")
    except (ValueError, KeyError, TypeError) as exc:
        raise TlxError(f"TF_CONFIG is not a usable cluster description ({exc}). Expected e.g. "
                       f"{example}.") from None
    return Cluster(workers=len(workers), index=index)


def input_pipelines(config) -> int:
    """How many workers each read a share of every batch (1 unless --strategy multi-worker)."""
    place = cluster(config.strategy)
    return place.workers if place is not None else 1


def make_strategy(strategy: Strategy):
    """The tf.distribute strategy. MultiWorkerMirroredStrategy must exist before any
    other TensorFlow op runs: callers create it first."""
    import tensorflow as tf

    strategy = Strategy(strategy)
    if strategy is Strategy.MIRRORED:
        return tf.distribute.MirroredStrategy()
    if strategy is Strategy.MULTI_WORKER:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_multi_worker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def distribute_dataset(strategy, make):
    """`make(shard)` -> a tf.data pipeline, where shard is None (all of the batch) or
    (index, count). Multi-worker: one pipeline per worker, its share of every batch."""
    if not is_multi_worker(strategy):
        return make(None)
    return strategy.distribute_datasets_from_function(
        lambda context: make((context.input_pipeline_id, context.num_input_pipelines)))


def worker_lost(exc: BaseException) -> bool:
    """Whether `exc` is how TensorFlow reports a worker that died or cannot be reached (the
    collective ops abort on the others: UNAVAILABLE, seen when a worker was killed)."""
    import tensorflow as tf

    return isinstance(exc, (tf.errors.UnavailableError, tf.errors.AbortedError,
                            tf.errors.DeadlineExceededError))


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if "unhealthy" in line or "not reachable" in line.lower()]
    return (useful or lines or [type(exc).__name__])[0][:300]


_PATCHED = False


def patch_keras_for_multi_worker(model, strategy) -> None:
    """Work around keras-team/keras#20585 for `model` under MultiWorkerMirroredStrategy."""
    global _PATCHED
    if not is_multi_worker(strategy):
        return
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as keras_trainer

    def symbolic_build(iterator=None, data_batch=None):
        # Keras reduces the first batch across replicas only to learn its shapes; this
        # worker's own replica has the same shapes.
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                break
            data_batch = tf.nest.map_structure(
                lambda v: strategy.experimental_local_results(v)[0]
                if isinstance(v, tf.distribute.DistributedValues) else v, batch)
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = symbolic_build
    if _PATCHED:
        return
    original = keras_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        # Step outputs are scalar losses and metrics: the mean over replicas, not over axis 0.
        if reduction in ("auto", "mean") and is_multi_worker(strategy):
            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None)
                if isinstance(v, tf.distribute.DistributedValues) else v, values)
        return original(values, strategy, reduction)

    keras_trainer.reduce_per_replica = reduce_per_replica
    _PATCHED = True
