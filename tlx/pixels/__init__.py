"""Decoded pixels, shared by training, export, bench and bundle: the pixel cache on disk
(cache), its typed index (cache_index) and the worker processes that fill it
(parallel_decode). Infrastructure below the trainer: nothing here imports tlx.trainer."""
