"""Benchmarks behind ``ssamba bench``: the selective scan, model inference, training steps.

* :mod:`ssamba.benchmarks.scan` - the fused CPU selective scan against pure-PyTorch
  scans, and against this CPU's arithmetic bound (``ssamba bench scan``);
* :mod:`ssamba.benchmarks.model` - SSAMBA vs SSAST inference time and peak memory over
  sequence length, one fresh process per configuration (``ssamba bench model``);
* :mod:`ssamba.benchmarks.train` - one pretraining step of the tiny presets on 1 s and
  10 s inputs (``ssamba bench train``).

The argument parsers live in :mod:`ssamba.benchmarks.cli` and import no torch; the
modules above are imported by the command functions only. Nothing here asserts
timings: the numbers are printed and written for people to read.
"""
