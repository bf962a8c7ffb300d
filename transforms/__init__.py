"""Engine-free domain logic of twinstream: adapters, validation, windows, models, policy."""
