"""PET Studio engine: tiers, backends, data, training and judging. No gradio import in here."""

__version__ = "0.1.0"


class PetError(Exception):
    """An error a user can act on: its message says what went wrong and how to fix it."""
