"""The detectors, one algorithm per module, behind one small protocol (:mod:`.base`).

- :class:`~.asset.AssetDetector` (``"asset"``): one asset's windows of features, judged
  against what its operating point explains. The twin's default.
- :class:`~.series.SeriesDetector` (``"series"``): a table of numeric columns, each judged
  against its own history.
- :class:`~.joint.JointDetector` (``"joint"``): a table's rows judged by how the columns
  move together (Hotelling's T² and a MEWMA, calibrated to a stated false-alarm rate).
- :class:`~.table.TableDetector` (``"table"``): both of the above, ``twin replay``'s
  default.

Engines and jobs take a detector from configuration, :func:`make`: a kind and its
settings, never a class chosen in code.
"""

from __future__ import annotations

from typing import Any

from transforms.detectors.asset import AssetDetector
from transforms.detectors.base import Assessment, Detector, tail_probability
from transforms.detectors.joint import JointDetector
from transforms.detectors.series import SERIES_CONFIG, SeriesDetector
from transforms.detectors.table import TableDetector

DETECTORS: dict[str, type[Detector]] = {
    "asset": AssetDetector,
    "series": SeriesDetector,
    "joint": JointDetector,
    "table": TableDetector,
}

__all__ = ["DETECTORS", "SERIES_CONFIG", "AssetDetector", "Assessment", "Detector",
           "JointDetector", "SeriesDetector", "TableDetector", "for_asset", "make",
           "tail_probability"]


def for_asset(asset_type: str, config: dict[str, Any] | None = None) -> Detector:
    """The detector of one asset from its configuration ``{"kind": ..., <settings>}``
    (kind ``"asset"`` when not given); the asset's type goes to kinds that take one."""
    import inspect

    settings = dict(config or {})
    kind = settings.pop("kind", "asset")
    cls = DETECTORS.get(kind)
    if cls is not None and "asset_type" in inspect.signature(cls).parameters:
        settings["asset_type"] = asset_type
    return make(kind, **settings)


def make(kind: str, **settings: Any) -> Detector:
    """A new detector of ``kind`` (a key of :data:`DETECTORS`) with ``settings``;
    ``ValueError`` naming the known kinds, or the setting a kind does not take."""
    try:
        cls = DETECTORS[kind]
    except KeyError:
        raise ValueError(f"unknown detector {kind!r}; known: {', '.join(DETECTORS)}") from None
    try:
        return cls(**settings)
    except TypeError as exc:
        raise ValueError(f"detector {kind!r}: {exc}") from None
