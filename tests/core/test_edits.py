"""Edits re-applied by image identity: applied, already holding, or reported."""

import pytest

from photogroup.edits import (
    APPLIED,
    HOLDS,
    NOT_APPLICABLE,
    Edit,
    EditError,
    Groups,
    apply_log,
    check_new_edit,
    new_group_id,
    parse_log,
)

WHO = {"who": "ana", "when": "2026-11-23T00:00:00+00:00"}


def machine() -> Groups:
    # a, b, c: one photo's copies; d, e: another; f alone.
    rows = [("a", "g1", "p1"), ("b", "g1", "p1"), ("c", "g1", "p1"),
            ("d", "g2", "p1"), ("e", "g2", "p1"), ("f", "g3", "p3")]  # fmt: skip
    return Groups.from_rows(rows)


def test_each_kind_applies_in_order():
    edits = [
        Edit("rename", **WHO, group=("a", "b", "c"), name="Cup"),
        Edit("split", **WHO, images=("c",)),
        Edit("merge", **WHO, groups=(("d", "e"), ("f",))),
        Edit("move", **WHO, image="b", to=("d", "e", "f")),
    ]
    groups, outcomes = apply_log(machine(), edits)
    assert [o.status for o in outcomes] == [APPLIED] * 4
    split = new_group_id(["c"])
    assert groups.group_of == {"a": "g1", "b": "g2", "c": split, "d": "g2", "e": "g2", "f": "g2"}
    assert groups.names == {"g1": "Cup"}
    assert groups.product_of[split] not in ("p1", "p3")
    assert groups.product_of["g2"] == "p1"  # the first merged group's product


def test_edits_follow_images_when_group_ids_change():
    # Clustering re-ran: the same images now sit under other ids, one more image joined.
    rows = [("a", "gX", "pX"), ("b", "gX", "pX"), ("c", "gX", "pX"), ("z", "gX", "pX"),
            ("d", "gY", "pY"), ("e", "gY", "pY")]  # fmt: skip
    edits = [
        Edit("rename", **WHO, group=("a", "b", "c"), name="Cup"),
        Edit("split", **WHO, images=("c",)),
    ]
    groups, outcomes = apply_log(Groups.from_rows(rows), edits)
    assert [o.status for o in outcomes] == [APPLIED, APPLIED]
    assert groups.names == {"gX": "Cup"}
    assert groups.group_of["c"] == new_group_id(["c"])


def test_edits_that_no_longer_apply_are_reported_with_reasons():
    rows = [("a", "g1", "p1"), ("b", "g9", "p9"), ("d", "g2", "p1")]  # c is gone, a/b apart
    edits = [
        Edit("rename", **WHO, group=("a", "b"), name="Cup"),
        Edit("move", **WHO, image="c", to=("d",)),
        Edit("merge", **WHO, groups=(("a",), ("d",))),
    ]
    groups, outcomes = apply_log(Groups.from_rows(rows), edits)
    assert [o.status for o in outcomes] == [NOT_APPLICABLE, NOT_APPLICABLE, APPLIED]
    assert "now in 2 groups" in outcomes[0].reason
    assert "no longer in the batch" in outcomes[1].reason
    assert groups.names == {}


def test_an_edit_the_machine_now_agrees_with_already_holds():
    edits = [Edit("split", **WHO, images=("f",)), Edit("merge", **WHO, groups=(("a",), ("b",)))]
    _, outcomes = apply_log(machine(), edits)
    assert [o.status for o in outcomes] == [HOLDS, HOLDS]


def test_log_round_trip_and_unreadable_lines_are_reported_not_dropped():
    edit = Edit("move", **WHO, why="wrong shelf", image="a", to=("d", "e"), ref={"file": "a.jpg"})
    text = edit.to_json() + "\n{not json\n" + '{"op": "explode", "who": "x", "when": "y"}\n'
    parsed = parse_log(text)
    assert parsed[0] == edit and parsed[0].ref == {"file": "a.jpg"}
    assert isinstance(parsed[1], EditError) and isinstance(parsed[2], EditError)
    _, outcomes = apply_log(machine(), parsed)
    assert [o.status for o in outcomes] == [APPLIED, NOT_APPLICABLE, NOT_APPLICABLE]
    assert "unknown edit kind" in outcomes[2].reason


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (Edit("split", **WHO, images=("a", "b", "c")), "every image of the group"),
        (Edit("split", **WHO, images=("a", "d")), "same group"),
        (Edit("merge", **WHO, groups=(("a",), ("b",))), "named twice"),
        (Edit("move", **WHO, image="a", to=("b",)), "already look like that"),
        (Edit("rename", **WHO, group=("a",), name=""), "missing"),
    ],
)
def test_new_edits_that_change_nothing_or_do_not_fit_are_refused(edit, message):
    with pytest.raises(EditError, match=message):
        check_new_edit(machine(), edit)


def test_undo_replays_the_log_without_the_edit_it_takes_back():
    from photogroup.edits import UNDONE, last_undoable, undo_edit

    base = machine()
    rename = Edit("rename", **WHO, group=("a", "b", "c"), name="Cup")
    merge = Edit("merge", **WHO, groups=(("a", "b", "c"), ("f",)))
    edits: list = [rename, merge]
    undo = undo_edit(edits, "bo", "t2")
    assert undo.undoes == 2 and Edit.from_json(undo.to_json()) == undo
    groups, outcomes = apply_log(base, [*edits, undo])
    assert [o.status for o in outcomes] == [APPLIED, UNDONE, APPLIED]
    assert groups.group_of["f"] == "g3"  # the merge is gone
    assert groups.names[groups.group_of["a"]] == "Cup"  # the rename stays
    # Undoing again walks back to the rename, then nothing is left.
    edits = [*edits, undo]
    assert last_undoable(edits) == 1
    edits.append(undo_edit(edits, "bo", "t3"))
    groups, _ = apply_log(base, edits)
    assert groups.names == {}
    with pytest.raises(EditError, match="no edit left to undo"):
        undo_edit(edits, "bo", "t4")
