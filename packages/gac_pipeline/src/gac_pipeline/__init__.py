"""gac_pipeline: three-stage SAR-to-optical generation on BigEarthNet v2.

Stage 1 (``gac-stage1``, :mod:`gac_pipeline.stage1`) precomputes opt_v1 with TerraMind generation,
stage 2 (``gac-stage2``) refines it with a LoRA-tuned Prithvi-EO backbone, stage 3 (``gac-stage3``)
grounds it on the SAR with the TerraMind encoder (both :mod:`gac_pipeline.train`);
``gac-infer`` (:mod:`gac_pipeline.predict`) runs and evaluates all three. The commands are declared in
:mod:`gac_pipeline.cli` from the typed config of :mod:`gac_pipeline.config`. See the package README.
"""
