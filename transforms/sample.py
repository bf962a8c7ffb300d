"""What a physical asset measured at one instant, before any vendor got its hands on it.

The simulator produces :class:`Sample` objects; vendor modules encode them into their own
raw record formats (tags, units, timestamps, quality codes), and vendor adapters turn
those raw records back into canonical readings. A round trip through a vendor therefore
returns the sample's values in SI, which is what the vendor tests check.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    """One multi-sensor measurement of one asset.

    Parameters
    ----------
    asset_id
        Fleet-unique id, e.g. ``"pump-003"``.
    asset_type
        A key of :data:`transforms.catalog.ASSET_TYPES`.
    ts_ms
        Event time, UTC epoch milliseconds.
    values
        Canonical sensor name -> value in the catalog's SI unit.
    quality
        Canonical sensor name -> ``"good" | "uncertain" | "bad"``; missing means good.
    """

    asset_id: str
    asset_type: str
    ts_ms: int
    values: dict[str, float]
    quality: dict[str, str] = field(default_factory=dict)
