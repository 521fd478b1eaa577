"""Single Window message broker: submit once, one coordinated decision."""

__version__ = "0.1.0"
