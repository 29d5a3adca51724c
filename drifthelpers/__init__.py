"""drifthelpers: dataset drift controls with physical data models of optical images."""

__version__ = "0.1.0"
