"""gac_pipeline: three-stage SAR-to-optical generation on BigEarthNet v2.

Stage 1 (:mod:`gac_pipeline.stage1`) precomputes opt_v1 with TerraMind generation, stage 2
(:mod:`gac_pipeline.stage2`) refines it with a LoRA-tuned Prithvi-EO backbone, stage 3
(:mod:`gac_pipeline.stage3`) grounds it on the SAR with the TerraMind encoder; :mod:`gac_pipeline.predict`
runs and evaluates all three. See the package README.
"""
