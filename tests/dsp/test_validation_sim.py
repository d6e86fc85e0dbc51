"""The simulator section of `runform validate` (sacral side labelling): it runs, scores every case, and the
side labels it reports are really compared with the truth (a detector that labels every step the same side
must score about half)."""
import numpy as np

from runform.server import validation


def test_sim_side_section_scores_every_case():
    rep = validation.evaluate_sim_side(duration_s=15.0)
    assert set(rep["cases"]) == {c[0] for c in validation.SIM_SIDE_CASES}
    for row in rep["cases"].values():
        assert row["n_true"] > 50 and row["n_matched"] <= row["n_true"]
        assert row["side_labelled"] <= row["n_matched"]
        assert 0.0 <= row["side_accuracy"] <= 1.0
        assert row["gct"]["n"] == row["n_matched"]
    md = validation.render_markdown({"sim_side": rep, "targets": [], "per_trial": [], "params": {},
                                     "generated_utc": "x", "data_root": "x", "python": "x", "numpy": "x",
                                     "numba": "x", "tolerance_ms": 60.0, "chunk_samples": 20})
    assert "## Sacrum side labelling — simulator only" in md


def test_sim_side_accuracy_detects_wrong_labels(monkeypatch):
    real_update = validation.GaitEventDetector.update

    def all_left(self, *a, **kw):
        steps = real_update(self, *a, **kw)
        steps["side"] = np.where(steps["side"] >= 0, 0, steps["side"])
        return steps

    monkeypatch.setattr(validation.GaitEventDetector, "update", all_left)
    rep = validation.evaluate_sim_side(duration_s=15.0)
    for row in rep["cases"].values():
        assert 0.3 < row["side_accuracy"] < 0.7
