"""A plant: its asset model and the formats its data arrive in, as one typed setting.

:class:`Plant` is what jobs build from ``--model`` and ``--format`` files and what the
engine bindings take; :meth:`Plant.install` makes it known in a worker process (the
catalog's asset types, the formats' adapters) before the first message, so a Beam worker
or a Flink Python worker anywhere reads the plant's data as the submitting process would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transforms.formats import Format, check_against, load_format
from transforms.model import BUILTIN, Model, ModelError, load_model


@dataclass(frozen=True)
class Plant:
    """The model and the formats of a plant (no formats: the built-in vendors' only)."""

    model: Model
    formats: tuple[Format, ...] = ()

    def install(self) -> None:
        """Register the model's asset types and the formats' adapters in this process
        (idempotent)."""
        from transforms import catalog
        from transforms.normalize import generic

        catalog.use(self.model)
        for fmt in self.formats:
            generic.register(fmt, self.model)

    @property
    def topics(self) -> tuple[str, ...]:
        """The topics the formats declare, in order."""
        return tuple(dict.fromkeys(t for f in self.formats for t in f.topics))


def load_plant(models: list[str | Path] | None = None,
               formats: list[str | Path] | None = None) -> Plant:
    """The plant of model and format files (no model file: the built-in fleet's);
    ``ModelError`` naming the file, line and field of anything wrong, or a format that
    names sensors its model does not have, or two formats claiming one topic."""
    model = load_model(*(models or [BUILTIN]))
    fmts = tuple(load_format(p) for p in formats or [])
    seen: dict[str, str] = {}
    for fmt in fmts:
        check_against(fmt, model)
        for topic in fmt.topics:
            if topic in seen:
                raise ModelError(f"{fmt.source}: topic {topic!r} is already read by format "
                                 f"{seen[topic]!r}")
            seen[topic] = fmt.name
    return Plant(model, fmts)


BUILTIN_PLANT = Plant(load_model(BUILTIN, check_units=False))
