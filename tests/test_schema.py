import numpy as np
import pytest

from gzpipe import schema

# A hand-worked row of conditional fractions (Hart16 order) and its cumulative (Kaggle-style) form.
COND = [0.5, 0.4, 0.1, 0.25, 0.75, 0.2, 0.8, 0.5, 0.5, 0.1, 0.2, 0.3, 0.4, 0.3, 0.7, 0.2, 0.6, 0.2,
        0.5, 0.25, 0.25, 0.2, 0.4, 0.4, 0.1, 0.2, 0.3, 0.1, 0.1, 0.2]
# t02 reached by a02 = 0.4; t03-t05 by a05 = 0.4*0.75 = 0.3; t07 by a01 = 0.5; t09 by a04 = 0.1;
# t10-t11 by a08 = 0.3*0.5 = 0.15; t06 always.
CUM = [0.5, 0.4, 0.1, 0.1, 0.3, 0.06, 0.24, 0.15, 0.15, 0.03, 0.06, 0.09, 0.12, 0.3, 0.7, 0.1, 0.3, 0.1,
       0.05, 0.025, 0.025, 0.03, 0.06, 0.06, 0.015, 0.03, 0.045, 0.015, 0.015, 0.03]


def test_thirty_targets_over_ten_tasks_in_hart16_order():
    assert schema.N_TARGETS == 30 and len(schema.TASKS) == 10
    assert "t08_odd_feature" not in schema.TASK_SLICES
    assert schema.TARGET_NAMES[0] == "t01_smooth_or_features_a01_smooth"
    assert schema.TARGET_NAMES[-1] == "t11_arms_number_a37_cant_tell"
    assert [s.stop - s.start for s in schema.TASK_SLICES.values()] == [3, 2, 2, 2, 4, 2, 3, 3, 3, 6]
    assert schema.PARENT_INDEX["t10_arms_winding"] == schema.TARGET_INDEX["t04_spiral_a08_spiral"]
    assert schema.PARENT_INDEX["t06_odd"] is None
    assert len(schema.KAGGLE_COLUMNS) == 37 and schema.KAGGLE_COLUMNS[-1] == "Class11.6"
    assert schema.target_columns("debiased")[4] == "t02_edgeon_a05_no_debiased"
    with pytest.raises(ValueError, match="choose one of"):
        schema.target_columns("votes")


def test_conditional_to_cumulative_hand_worked():
    np.testing.assert_allclose(schema.conditional_to_cumulative(np.array(COND)), CUM, atol=1e-12)


def test_cumulative_to_conditional_hand_worked_and_round_trip():
    cond, mask = schema.cumulative_to_conditional(np.array([CUM, CUM]))
    np.testing.assert_allclose(cond[0], COND, atol=1e-12)
    assert mask.all()


def test_unreached_task_is_zero_over_zero_flagged_in_mask():
    row = np.zeros(30)
    row[0] = 1.0  # everyone said "smooth": nobody reached the disk branch
    row[schema.TASK_SLICES["t06_odd"]] = [0.2, 0.8]
    row[schema.TASK_SLICES["t07_rounded"]] = [0.5, 0.5, 0.0]
    cond, mask = schema.cumulative_to_conditional(row)
    assert not np.isnan(cond).any()
    for t in ("t02_edgeon", "t03_bar", "t04_spiral", "t05_bulge_prominence", "t09_bulge_shape",
              "t10_arms_winding", "t11_arms_number"):
        s = schema.TASK_SLICES[t]
        assert (cond[s] == 0).all() and not mask[s].any(), t
    for t in ("t01_smooth_or_features", "t06_odd", "t07_rounded"):
        assert mask[schema.TASK_SLICES[t]].all()
    np.testing.assert_allclose(cond[schema.TASK_SLICES["t07_rounded"]], [0.5, 0.5, 0.0])


def test_nan_propagates_with_mask_zero():
    cum = np.array(CUM)
    cum[schema.TARGET_INDEX["t04_spiral_a08_spiral"]] = np.nan
    cond, mask = schema.cumulative_to_conditional(cum)
    i = schema.TARGET_INDEX["t04_spiral_a08_spiral"]
    assert np.isnan(cond[i]) and not mask[i]
    assert not mask[schema.TASK_SLICES["t10_arms_winding"]].any()  # children of a NaN parent are unknown too
    assert mask[schema.TASK_SLICES["t03_bar"]].all()


def test_kaggle_37_to_30():
    k = np.zeros(37)
    order = [c for c in schema.KAGGLE_COLUMNS]
    for name, v in zip(schema.KAGGLE_TARGET_COLUMNS, CUM):
        k[order.index(name)] = v
    k[order.index("Class8.6")] = 0.2  # t08 is read but not a target
    cond, mask = schema.kaggle_to_targets(k)
    np.testing.assert_allclose(cond, COND, atol=1e-12)
