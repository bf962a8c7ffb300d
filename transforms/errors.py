"""Domain errors. Pipelines catch these and route the record to the dead-letter output."""

from __future__ import annotations

# Machine-readable reason codes carried by dead-letter records. Keep them stable: downstream
# users filter and alert on them.
REASONS: frozenset[str] = frozenset(
    {
        "oversize_payload",  # raw message larger than the configured limit
        "null_value",  # a message without a value (a Kafka tombstone)
        "empty_payload",  # zero-length message
        "bad_magic",  # not Confluent wire format (magic byte 0 + 4-byte schema id)
        "unknown_schema",  # schema id not in the registry
        "unknown_vendor",  # schema/topic does not belong to a registered vendor
        "malformed_avro",  # Avro body cannot be decoded with its schema
        "malformed_payload",  # the vendor's JSON/CSV inside the Avro record is broken
        "missing_field",  # a required vendor field is absent or null
        "unknown_asset_type",  # asset class not in the catalog
        "bad_asset_id",  # empty or non-printable asset id
        "unknown_tag",  # vendor tag with no mapping for this asset type
        "unknown_unit",  # unit string not understood, or of the wrong dimension
        "non_finite_value",  # NaN or +/-inf
        "out_of_range",  # outside the catalog's physical plausibility range
        "bad_timestamp",  # unparseable timestamp
        "timestamp_in_future",  # later than now + allowed clock skew (arrival or our clock)
        "timestamp_jump",  # far ahead of its asset's latest event time, not (yet) confirmed
        "timestamp_too_old",  # earlier than now - max age
        "no_good_values",  # every sensor had bad quality
    }
)


class InvalidReading(ValueError):
    """A raw payload that cannot become a canonical reading.

    Parameters
    ----------
    reason
        One of :data:`REASONS`.
    detail
        Human-readable detail (which field, which value). Never contains secrets.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown dead-letter reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # keep picklable across process boundaries
        return (InvalidReading, (self.reason, self.detail))
