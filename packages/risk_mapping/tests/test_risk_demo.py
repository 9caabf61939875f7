"""The eolab demo on the real DEM sample (needs `eolab samples fetch`)."""

from __future__ import annotations

import numpy as np
import pytest
from risk_mapping.demo import susceptibility_labels, terrain_stack


def test_terrain_features_on_a_plane():
    # a plane rising 10 m per row and 5 m per column on a 10 m grid
    z = np.add.outer(np.arange(16.0) * 10, np.arange(16.0) * 5)
    stack = terrain_stack(z, 10.0, 10.0, np.ones_like(z, bool))
    inner = (slice(3, -3), slice(3, -3))
    assert np.allclose(stack[1][inner], np.degrees(np.arctan(np.hypot(1.0, 0.5))), atol=1e-4)
    assert np.allclose(stack[4][inner], 0.0, atol=1e-6)  # no curvature
    assert np.allclose(stack[5][inner], 0.0, atol=1e-6)  # TPI of a plane is 0
    assert np.allclose(stack[6][inner], 30.0)  # 3x3 max - min = 2 rows x 10 + 2 cols x 5
    labels = susceptibility_labels(stack, np.ones_like(z, bool))
    assert set(np.unique(labels)) <= {0, 1, 2}


@pytest.mark.slow
@pytest.mark.samples
def test_demo_runs_on_real_dem(tmp_path):
    from eo_common.samples import require_samples

    require_samples("dem")
    from risk_mapping.demo import run_demo

    result = run_demo(tmp_path, seed=0, budget_s=45)
    assert all(f.is_file() for f in result.figures)
    assert (
        "| kappa |" in result.summary_md
        and "real" in result.summary_md
        and "Simulated" in result.summary_md
    )
    assert 0.0 <= result.metrics["no_crf/accuracy"] <= 1.0 and "crf/kappa" in result.metrics
