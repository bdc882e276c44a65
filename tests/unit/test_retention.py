"""kohya's save names and retention rules (docs/kohya.md §8.1–8.2), checked against a plain reimplementation of the
rules: the files left on disk after a whole run of saves."""

from __future__ import annotations

import pytest

from sdlora.state import retention


def kept_step_files(every: int, keep: int, last_step: int) -> set[int]:
    """§8.2, the closed form: of the step files saved every ``every`` steps up to ``last_step``, those with
    step ≥ s − N remain (s = the last save)."""
    saved = range(every, last_step + 1, every)
    s = max(saved)
    return {step for step in saved if step >= s - keep}


def simulate(every: int, keep: int, last_step: int, remove) -> set[int]:
    """Save every ``every`` steps, each save deleting at most the one candidate ``remove(step)`` names (kohya)."""
    on_disk: set[int] = set()
    for step in range(every, last_step + 1, every):
        on_disk.add(step)
        removed = remove(step)
        if removed is not None:
            on_disk.discard(removed)
    return on_disk


TRIPLES = [(10, 30, 50), (10, 30, 200), (1, 3, 12), (2, 3, 13), (3, 7, 40), (5, 5, 27), (4, 100, 30), (7, 6, 70)]


@pytest.mark.parametrize(("every", "keep", "last"), TRIPLES)
def test_step_files_keep_the_last_n_steps(every, keep, last):
    on_disk = simulate(every, keep, last, lambda s: retention.step_to_remove(s, every, keep))
    assert on_disk == kept_step_files(every, keep, last)
    saves = last // every
    assert len(on_disk) == min(saves, keep // every + 1)  # ⌊N/every⌋ + 1 files once enough were saved


def test_kohya_example_at_step_50_deletes_step_10():
    assert retention.step_to_remove(50, 10, 30) == 10
    assert retention.step_to_remove(40, 10, 30) == 0  # r = 9 → 0: "step 0", which is never a file
    assert retention.step_to_remove(30, 10, 30) is None  # r = −1


def test_no_retention_without_last_n():
    assert retention.step_to_remove(100, 10, None) is None
    assert retention.step_state_to_remove(100, 10, None) is None
    assert retention.epoch_to_remove(10, 1, None) is None
    assert retention.older_than({1: 5, 2: 10}, 100, None) == []


@pytest.mark.parametrize(("every", "keep", "last"), TRIPLES)
def test_step_states_use_the_same_rule_with_n_in_steps(every, keep, last):
    on_disk = simulate(every, keep, last, lambda s: retention.step_state_to_remove(s, every, keep))
    assert on_disk == kept_step_files(every, keep, last)


def test_step_state_rule_deletes_only_r_above_zero():
    # r = 4 − 3 − 1 = 0: the file rule says "delete step 0" (no such file), the state rule deletes nothing
    assert retention.step_to_remove(4, 1, 3) == 0
    assert retention.step_state_to_remove(4, 1, 3) is None
    assert retention.step_state_to_remove(5, 1, 3) == 1


@pytest.mark.parametrize(("every", "keep", "epochs"), [(1, 2, 10), (2, 2, 11), (3, 1, 12), (1, 5, 3)])
def test_epoch_files_keep_n(every, keep, epochs):
    on_disk: set[int] = set()
    for epoch in range(every, epochs + 1, every):
        on_disk.add(epoch)
        removed = retention.epoch_to_remove(epoch, every, keep)
        if removed is not None:
            on_disk.discard(removed)
    saved = list(range(every, epochs + 1, every))
    assert on_disk == set(saved[-keep:])


def test_older_than_removes_epoch_saves_before_s_minus_n():
    saved_at = {1: 5, 2: 10, 3: 15}
    assert retention.older_than(saved_at, 18, 5) == [1, 2]  # saved at 5 and 10 < 13
    assert retention.older_than(saved_at, 18, 3) == [1, 2]
    assert retention.older_than(saved_at, 15, 10) == []


def test_names():
    assert retention.step_name("last", 200) == "last-step00000200"
    assert retention.epoch_name("my", 1) == "my-000001"
    assert retention.state_name("my-000001") == "my-000001-state"
