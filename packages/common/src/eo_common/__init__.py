"""eo_common: the shared library of eolab.

Modules (import them directly; this package imports nothing heavy on its own):

- :mod:`eo_common.io` — atomic writes, the resumable-work manifest, provenance.
- :mod:`eo_common.raster` — GeoTIFF I/O, band stacking, tiles, blended sliding-window prediction.
- :mod:`eo_common.normalize` — S1/S2 scaling conventions, percentile stretch, band statistics.
- :mod:`eo_common.losses` — losses as modules and functions.
- :mod:`eo_common.metrics` — streaming image-quality and segmentation metrics.
- :mod:`eo_common.config`, :mod:`eo_common.command`, :mod:`eo_common.argv`, :mod:`eo_common.runs`,
  :mod:`eo_common.errors` — typed config, commands, run folders, one-line errors.
- :mod:`eo_common.training` — Lightning base module, schedulers, NaN guard, Trainer factory, ``fit_run``.
- :mod:`eo_common.viz` — PNG plots.
- :mod:`eo_common.samples`, :mod:`eo_common.benv2` — real sample data; BigEarthNet v2 readers.
- :mod:`eo_common.loading`, :mod:`eo_common.packing` — DataLoader settings, packed data sets.
- :mod:`eo_common.sweep`, :mod:`eo_common.compare` — ``eolab sweep`` (Optuna) and ``eolab runs compare``.
- :mod:`eo_common.demos`, :mod:`eo_common.cli` — demo plug-ins and the ``eolab`` command.
"""

__version__ = "0.1.0"
