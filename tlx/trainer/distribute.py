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
strategies. The workaround replaces private Keras functions: `check_keras_patch` refuses a
Keras it was not tested on, or one where a target moved or changed.

Before any of this, TF_CONFIG is parsed by tlx.trainer.tf_config and the addresses checked;
the workers meet in tlx.trainer.peer_wait (bounded, interruptible) before TensorFlow
connects them.
"""

from __future__ import annotations

import atexit
import importlib
import inspect
import os
import signal
from typing import Optional

from tlx.errors import TlxError
from tlx.progress import Log
from tlx.trainer import peer_wait
from tlx.run_config import Strategy
from tlx.trainer.tf_config import Cluster, cluster  # noqa: F401  (cluster: the one TF_CONFIG parser)


def prepare_cluster(strategy: Strategy) -> Optional[Cluster]:
    """For --strategy multi-worker, before any work (and before TensorFlow is imported):
    TF_CONFIG parsed and every address checked (resolves, no duplicate, this worker's port
    free). None for the other strategies. Callers check the Keras workaround next
    (`check_keras_patch`), once Keras is known to be installed."""
    place = cluster(strategy)
    if place is not None:
        peer_wait.check_addresses(place)
    return place


def make_strategy(strategy: Strategy, place: Optional[Cluster] = None, peer_timeout: float = 0.0,
                  log: Log = lambda _line: None):
    """The tf.distribute strategy. MultiWorkerMirroredStrategy must exist before any
    other TensorFlow op runs: callers create it first. Multi-worker (`place` given): the
    workers meet first (tlx.trainer.peer_wait), bounded by `peer_timeout` seconds
    (TrainConfig.peer_timeout)."""
    import tensorflow as tf

    strategy = Strategy(strategy)
    if strategy is Strategy.MIRRORED:
        return tf.distribute.MirroredStrategy()
    if strategy is Strategy.MULTI_WORKER:
        peer_wait.wait_for_peers(place, peer_timeout, log)
        return _connect_workers(peer_timeout, log)
    return tf.distribute.get_strategy()


def _connect_workers(peer_timeout: float, log: Log):
    """MultiWorkerMirroredStrategy(), once every worker is known to be up.

    It blocks in C++ holding the GIL until every worker has registered (seconds, now that
    all of them were just seen): no Python handler can run meanwhile. So Ctrl-C gets the
    default action (the process ends at once), and a C watchdog (faulthandler, which needs
    no GIL) ends the process if a worker vanished in between. TensorFlow also takes SIGTERM
    for its preemption notice, which does not stop anything: afterwards SIGTERM is a Ctrl-C
    again (the run stops after saving, see tlx.trainer.train)."""
    import faulthandler

    import tensorflow as tf

    previous = signal.signal(signal.SIGINT, signal.SIG_DFL)
    log(f"TensorFlow connects the workers now (at most {peer_timeout:g} s, then tlx exits with "
        "status 1; Ctrl-C ends it at once).")
    with open(os.devnull, "w") as devnull:
        # exit=True: _exit(1) after writing the (unwanted) thread dump to devnull.
        faulthandler.dump_traceback_later(peer_timeout, exit=True, file=devnull)
        try:
            made = tf.distribute.MultiWorkerMirroredStrategy()
        finally:
            faulthandler.cancel_dump_traceback_later()
            signal.signal(signal.SIGINT, previous)
    signal.signal(signal.SIGTERM, _interrupt)
    atexit.register(_terminate_thread_pools)
    return made


def _terminate_thread_pools() -> None:
    """TensorFlow's collective all-reduce maps over a multiprocessing ThreadPool per step
    (cross_device_ops.py). A Ctrl-C or SIGTERM inside that map leaves the pool running;
    collected during interpreter shutdown, after its queue's pipe was closed, it prints
    "Exception ignored in Pool.__del__ ... Bad file descriptor" with a traceback (seen
    under load in test_sigterm_during_training_stops_the_chief_like_ctrl_c). Terminated at
    exit, before the shutdown, it has nothing left to do."""
    import gc
    import multiprocessing.pool

    for obj in gc.get_objects():
        if isinstance(obj, multiprocessing.pool.Pool):
            obj.terminate()


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


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


#: Keras versions (major.minor) the keras-team/keras#20585 workaround was tested on.
#: When Keras fixes #20585, the workaround goes (and this check with it); until then a new
#: Keras is refused rather than trained with a patch that may no longer fit.
TESTED_KERAS = ("3.15",)
#: What the workaround replaces or calls: module -> attribute -> its parameters.
KERAS_PATCH_TARGETS = {
    "keras.src.backend.tensorflow.trainer": {
        "reduce_per_replica": ("values", "strategy", "reduction"),
        "TensorFlowTrainer._maybe_symbolic_build": ("self", "iterator", "data_batch"),
        "TensorFlowTrainer._symbolic_build": ("self", "iterator", "data_batch"),
    },
}


def check_keras_patch(version: Optional[str] = None) -> None:
    """TlxError unless Keras is a version the workaround was tested on and every patched
    target exists with the parameters it had there (a renamed method would otherwise
    bring the original failure back without a word)."""
    import keras

    version = keras.__version__ if version is None else version
    advice = ("tlx works around keras-team/keras#20585 (MultiWorkerMirroredStrategy with fit) and "
              f"that workaround was tested on Keras {', '.join(TESTED_KERAS)}. Install a tested Keras "
              f"(pip install 'keras=={TESTED_KERAS[-1]}.*') or use another --strategy; if #20585 is "
              "fixed in your Keras, please report it so tlx can drop the workaround.")
    if ".".join(version.split(".")[:2]) not in TESTED_KERAS:
        raise TlxError(f"--strategy multi-worker: Keras {version} is not supported. {advice}")
    for module_name, targets in KERAS_PATCH_TARGETS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise TlxError(f"--strategy multi-worker: Keras {version} has no module {module_name}. "
                           f"{advice}") from None
        for path, parameters in targets.items():
            target = module
            for part in path.split("."):
                target = getattr(target, part, None)
            found = tuple(inspect.signature(target).parameters) if callable(target) else None
            if found != parameters:
                what = "is missing" if found is None else f"takes ({', '.join(found)})"
                raise TlxError(f"--strategy multi-worker: {module_name}.{path} {what} in Keras {version}. "
                               f"{advice}")


_PATCHED = False


def patch_keras_for_multi_worker(model, strategy) -> None:
    """Work around keras-team/keras#20585 for `model` under MultiWorkerMirroredStrategy."""
    global _PATCHED
    if not is_multi_worker(strategy):
        return
    check_keras_patch()
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
