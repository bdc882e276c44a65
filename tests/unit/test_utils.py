"""kohya's ``loss/average`` ring buffer (docs/kohya.md §7) and atomic file writes."""

from __future__ import annotations

import json
import math

import pytest

from sdlora.lit.running_mean import RunningMean
from sdlora.utils.atomic import atomic_path, atomic_write, atomic_write_json, atomic_write_text, readable_json

# --- RunningMean ------------------------------------------------------------------------------------------------------


def test_running_mean_over_the_last_window_values():
    rm = RunningMean(3)
    assert math.isnan(rm.mean)  # nothing seen yet
    assert [rm.update(v) for v in [1.0, 2.0, 3.0, 4.0, 5.0, 0.0]] == pytest.approx(
        [1.0, 1.5, 2.0, (2 + 3 + 4) / 3, (3 + 4 + 5) / 3, (4 + 5 + 0) / 3]
    )
    assert rm.mean == pytest.approx(3.0)
    assert len(rm.values) == 3


def test_running_mean_matches_a_sliding_window():
    values = [((i * 37) % 11) / 3.0 for i in range(50)]
    rm = RunningMean(7)
    for i, v in enumerate(values):
        window = values[max(0, i - 6) : i + 1]
        assert rm.update(v) == pytest.approx(sum(window) / len(window))


def test_running_mean_window_one_is_the_last_value():
    rm = RunningMean(1)
    assert [rm.update(v) for v in [3.0, -1.0, 8.5]] == [3.0, -1.0, 8.5]


def test_running_mean_rejects_an_empty_window():
    with pytest.raises(ValueError, match="window"):
        RunningMean(0)


def test_running_mean_state_round_trip():
    rm = RunningMean(4)
    for v in [1.0, 2.0, 3.0, 4.0, 10.0, 20.0]:  # wrapped around: position 2
        rm.update(v)
    state = rm.state_dict()
    assert state == {"window": 4, "values": [10.0, 20.0, 3.0, 4.0], "position": 2}
    json.dumps(state)  # plain data

    restored = RunningMean(99)  # the window comes from the state
    restored.load_state_dict(state)
    assert restored.window == 4 and restored.mean == rm.mean
    for v in [5.0, 6.0, 7.0]:
        assert restored.update(v) == rm.update(v)  # continues exactly as the original
    assert restored.state_dict() == rm.state_dict()


def test_running_mean_state_is_a_copy():
    rm = RunningMean(3)
    rm.update(1.0)
    state = rm.state_dict()
    rm.update(5.0)
    assert state["values"] == [1.0]  # the saved state does not change with later updates
    other = RunningMean(3)
    other.load_state_dict(state)
    state["values"].append(100.0)
    assert other.values == [1.0]  # nor does the loaded object share the dict's list


def test_running_mean_partial_buffer_state_round_trip():
    rm = RunningMean(5)
    rm.update(2.0)
    rm.update(4.0)
    restored = RunningMean(5)
    restored.load_state_dict(rm.state_dict())
    assert restored.update(6.0) == pytest.approx(4.0)


# --- atomic writes ----------------------------------------------------------------------------------------------------


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def test_atomic_write_text_creates_and_replaces(tmp_path):
    target = tmp_path / "out.txt"
    assert atomic_write_text(target, "first") == target
    assert target.read_text(encoding="utf-8") == "first"
    atomic_write_text(target, "second ü")
    assert target.read_text(encoding="utf-8") == "second ü"
    assert _leftovers(tmp_path) == []


def test_atomic_write_creates_parent_folders(tmp_path):
    target = tmp_path / "a" / "b" / "plan.json"
    atomic_write_json(target, {"x": 1})
    assert target.is_file()


def test_atomic_write_json_round_trip(tmp_path):
    data = {"buckets": [{"resolution": [512, 768], "images": [{"path": "/é/a.png", "repeats": 3}]}], "n": 1.5}
    target = atomic_write_json(tmp_path / "data_plan.json", data)
    text = target.read_text(encoding="utf-8")
    assert json.loads(text) == data
    assert text.endswith("\n") and "/é/a.png" in text  # not ASCII-escaped
    assert '\n        {"path": "/é/a.png", "repeats": 3}\n' in text  # an image per line, the levels above indented
    assert json.loads(readable_json({"a": [], "b": {}, "c": [[[[[1]]]]]})) == {"a": [], "b": {}, "c": [[[[[1]]]]]}


def test_atomic_path_writes_to_a_temporary_sibling(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("new")
        assert target.read_text() == "old"  # the target is untouched until the block succeeds
    assert target.read_text() == "new"
    assert not tmp.exists()
    assert _leftovers(tmp_path) == []


def test_exception_in_the_block_keeps_the_previous_file(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("previous")

    def write_then_fail(tmp):
        tmp.write_text("half a fi")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, write_then_fail)
    assert target.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]  # no temporary file remains


def test_exception_without_previous_file_leaves_nothing(tmp_path):
    target = tmp_path / "new.json"
    with pytest.raises(KeyError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []


def test_exception_before_the_temporary_file_exists(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("keep")
    with pytest.raises(ValueError), atomic_path(target):
        raise ValueError("nothing written yet")
    assert target.read_text() == "keep"
    assert _leftovers(tmp_path) == []


def test_atomic_write_unserialisable_json_keeps_the_previous_file(tmp_path):
    target = tmp_path / "plan.json"
    atomic_write_json(target, {"ok": True})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"ok": True}
    assert _leftovers(tmp_path) == []
