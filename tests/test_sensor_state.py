"""The upload sensor's bounded cursor, without S3 (sensors/sensor_state.py)."""

from datetime import UTC, datetime, timedelta

from sensors.sensor_state import MARGIN, SensorState

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def test_a_cursor_from_before_the_watermark_is_migrated_and_then_forgotten():
    state = SensorState.from_cursor('{"done": {"a/1": "tok1", "a/2": "tok2"}, "last_tenant": "a"}')
    assert state.handled("a/1", "tok1", T0)
    assert not state.handled("a/2", "resealed", T0 + timedelta(hours=1))
    state.advance(T0 + MARGIN + timedelta(seconds=1))
    again = SensorState.from_cursor(state.to_cursor())
    assert again.last_tenant == "a" and not again.legacy and not again.recent
    assert again.handled("a/1", "tok1", T0)  # covered by the watermark now


def test_pending_sealings_are_looked_at_whatever_the_watermark():
    state = SensorState(pending={"slow/1": "tok"})
    state.advance(T0 + timedelta(days=1))
    restored = SensorState.from_cursor(state.to_cursor())
    assert not restored.handled("slow/1", "tok", T0)  # sealed long ago, still not run
    assert restored.handled("other/1", "tok", T0)


def test_recent_sealings_are_kept_until_the_watermark_covers_them():
    state = SensorState()
    state.mark("a/1", "tok", T0)
    state.advance(T0 + timedelta(minutes=1))
    assert state.knows("a/1") and state.handled("a/1", "tok", T0)
    assert not state.handled("a/1", "new", T0 + timedelta(minutes=1))
    state.advance(T0 + MARGIN + timedelta(seconds=1))
    assert not state.knows("a/1") and state.handled("a/1", "tok", T0)
