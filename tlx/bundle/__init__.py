"""The bench bundle: one file that carries a run's exported models, held-out test photos and
the host's results to a device, so that `tlx bench BUNDLE` measures accuracy and latency
there, through the device's own kernels, without TensorFlow or the run folder.

tlx.bundle.manifest is the one typed schema of its manifest.json, tlx.bundle.archive reads
and checks a bundle's zip and members (both TensorFlow-free, they run on the device),
tlx.bundle.make writes one on the host, tlx.bundle.device benches one on the device,
tlx.bundle.result is the schema of the result file the device writes and `tlx report --device`
reads, tlx.bundle.compare puts host and devices side by side. A sweep's bundle (every
candidate of `tlx sweep`, photos once) is the same schema in its format-2 form, written by
tlx.sweep.bundle and reported by tlx.sweep.device_report.
"""
