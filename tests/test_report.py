"""Generated markdown sections and the training summary used by the model card."""
from __future__ import annotations

import json

from diffscm.scm.packaging import training_summary
from diffscm.eval.report import md_table, write_section


def test_write_section_replaces_only_its_block(tmp_path):
    p = tmp_path / "R.md"
    p.write_text("# Title\n\nhand-written text\n")
    write_section(p, "a", "first")
    write_section(p, "b", "other")
    write_section(p, "a", "second")
    text = p.read_text()
    assert text.count("<!-- a:start -->") == 1 and "second" in text and "first" not in text
    assert text.index("hand-written text") < text.index("second") < text.index("other")


def test_md_table():
    assert md_table(["x", "y"], [[1, 2]]) == "| x | y |\n|---|---|\n| 1 | 2 |"


def test_training_summary_sums_resumed_segments(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"kind": "oracle", "meta": {"command": "c2", "step": 30}}))
    hist = [{"step": 10, "loss": 1.0, "elapsed_s": 5.0}, {"step": 20, "loss": 0.8, "elapsed_s": 9.0},
            {"step": 30, "loss": 0.5, "elapsed_s": 4.0}]  # clock restarted by a resume after step 20
    (tmp_path / "trainer_state.json").write_text(json.dumps({"step": 30, "history": hist, "train": {"seed": 0},
                                                             "segments": [{"command": "c1"}, {"command": "c2"}]}))
    s = training_summary(tmp_path)
    assert s["wall_seconds"] == 13.0 and s["steps"] == 30 and s["final_loss"] == 0.5
    assert [g["command"] for g in s["segments"]] == ["c1", "c2"] and s["command"] == "c2"
    assert training_summary(tmp_path / "missing") is None


def test_training_summary_of_a_packed_part_is_its_record(tmp_path):
    rec = {"steps": 7, "wall_seconds": 1.5, "final_loss": 0.2, "train": {"seed": 3}}
    (tmp_path / "training.json").write_text(json.dumps(rec))
    assert training_summary(tmp_path) == rec
