"""Whether a reading's event time fits its asset's recent history: one forged time must
not move an asset's watermark.

An asset's data watermark follows the largest event time it has seen
(:class:`~transforms.windowing.WindowBuffer`). A single reading far ahead of the rest,
whether from a broken device clock or a forged message whose Kafka timestamp is forged
with it, would push the watermark ahead and make every later genuine reading of the asset
late. Readings in the future of the processing machine's clock are refused before they
get here (:func:`~transforms.validate.validate`, ``clock_ms``); replays of old history
cannot be judged by the clock, so each asset is also judged against itself.

:class:`EventTimeGuard` is that judgement, one per asset (it lives in the asset's twin,
so every engine applies it the same way and keeps it in the twin's state):

- a reading at most ``max_jump_ms`` ahead of the asset's latest event time is admitted;
- a reading further ahead is a *jump*: held back (a dead letter with reason
  ``timestamp_jump``, never silently dropped) until ``confirmations`` readings in a row
  are all jumps and each within ``max_jump_ms`` of the one before. The last of them is
  admitted and the asset's time moves on; the ones before stay dead letters.

So an asset that was really offline (a day, a week) resumes after ``confirmations - 1``
of its readings are dead-lettered, while one forged reading, followed by the asset's
genuine readings, is never admitted: the next genuine reading is no jump and clears the
held ones. The first reading of an asset has no history to be judged against and is
admitted. ``max_jump_ms`` must exceed the longest silence of an asset that should not
cost readings (the simulator's repairs: up to 40 minutes; default one hour, the bound
Kafka brokers put on timestamps ahead of their clock, ``log.message.timestamp.after.max.ms``).

>>> guard = EventTimeGuard(max_jump_ms=3_600_000, confirmations=3)
>>> guard.admit(4_102_444_800_000, latest_ms=1_000_000) is None   # year 2100: held
False
>>> guard.admit(1_005_000, latest_ms=1_000_000) is None           # the asset goes on
True
>>> [guard.admit(t, latest_ms=1_000_000) is None                  # a day later, 3 in a row
...  for t in (87_400_000, 87_405_000, 87_410_000)]
[False, False, True]
"""

from __future__ import annotations

import numpy as np

NO_TIME = -(2**62)  # the asset has no event time yet (WindowBuffer's NEG_INF)
DEFAULT_MAX_JUMP_MS = 3_600_000
DEFAULT_CONFIRMATIONS = 3


class EventTimeGuard:
    """Admits or holds back readings whose event time jumps ahead of their asset's.

    Parameters
    ----------
    max_jump_ms
        How far ahead of the asset's latest event time a reading may be and still be
        admitted at once. ``None`` turns the guard off (every reading admitted).
    confirmations
        How many readings in a row, each a jump and within ``max_jump_ms`` of the one
        before, make a jump genuine (the last of them is admitted). 1 admits every jump.
    """

    def __init__(self, max_jump_ms: int | None = DEFAULT_MAX_JUMP_MS,
                 confirmations: int = DEFAULT_CONFIRMATIONS) -> None:
        if max_jump_ms is not None and max_jump_ms < 0:
            raise ValueError(f"max_jump_ms must be >= 0 or None, got {max_jump_ms}")
        if confirmations < 1:
            raise ValueError(f"confirmations must be >= 1, got {confirmations}")
        self.max_jump_ms = max_jump_ms
        self.confirmations = confirmations
        self._held: list[int] = []  # event times of the jumps held back, in order

    # pickled with every twin at every engine state commit: settings as arguments, the
    # held-back times only when there are any (half the bytes of a plain instance)
    def __reduce__(self):
        return EventTimeGuard, (self.max_jump_ms, self.confirmations), self._held or None

    def __setstate__(self, held: list[int]) -> None:
        self._held = list(held)

    @property
    def held(self) -> int:
        """How many readings in a row were held back so far (their jump unconfirmed)."""
        return len(self._held)

    def admit(self, ts_ms: int, latest_ms: int) -> str | None:
        """``None`` if a reading at ``ts_ms`` may enter an asset whose latest event time is
        ``latest_ms`` (:data:`NO_TIME`: none yet), else why it is held back (a dead
        letter's detail). Call it for every reading of the asset, in arrival order."""
        limit = self.max_jump_ms
        if limit is None or latest_ms == NO_TIME or ts_ms - latest_ms <= limit:
            if self._held:
                self._held = []  # the asset went on on its own time: those stay refused
            return None
        held = self._held
        if held and abs(ts_ms - held[-1]) > limit:
            held = []  # not the same new timeline as the readings held before
        if len(held) + 1 >= self.confirmations:
            self._held = []
            return None
        held.append(ts_ms)
        self._held = held
        return (f"ts_ms {ts_ms} is {_span(ts_ms - latest_ms)} ahead of the asset's latest "
                f"event time {latest_ms}; held back until {self.confirmations} readings in "
                f"a row confirm the jump ({len(held)} so far)")

    def admits_all(self, ts_ms: np.ndarray, latest_ms: int) -> bool:
        """Whether :meth:`admit` would admit every one of ``ts_ms`` (arrival order) without
        holding any back: the hot path's check, one vectorized pass. ``False`` says
        nothing about which; call :meth:`admit` row by row then."""
        limit = self.max_jump_ms
        if limit is None or len(ts_ms) == 0:
            return True
        if self._held:
            return False  # a row may confirm the held jump or clear it: row by row
        if latest_ms != NO_TIME and int(ts_ms.max()) - latest_ms <= limit:
            return True  # every row is within reach of what the asset had already seen
        # the first readings of an asset, or some row far ahead: each row against the
        # latest time before it, every row before it admitted
        before = np.maximum.accumulate(ts_ms)
        first_ok = True
        if latest_ms != NO_TIME:
            before = np.maximum(before, latest_ms)
            first_ok = int(ts_ms[0]) - latest_ms <= limit
        return first_ok and bool(np.all(ts_ms[1:] - before[:-1] <= limit))


def _span(ms: int) -> str:
    """``ms`` for a person: ``'1 d 2 h'``, ``'75 y'``, ``'3 min'``.

    >>> _span(93_600_000), _span(180_000), _span(2_366_841_600_000)
    ('1 d 2 h', '3 min', '75 y')
    """
    minutes = ms // 60_000
    if minutes < 60:
        return f"{minutes} min" if minutes else f"{ms} ms"
    hours = minutes // 60
    if hours < 24:
        return f"{hours} h {minutes % 60} min"
    days = hours // 24
    if days < 365:
        return f"{days} d {hours % 24} h"
    return f"{days // 365} y"
