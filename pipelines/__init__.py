"""Engine bindings: Beam (and, later, PyFlink) compositions of ``transforms``."""
