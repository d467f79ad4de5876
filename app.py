"""PET Studio web app (also the Hugging Face Spaces entry point): `python app.py`."""

import os

from pet import PetError
from pet.config import Settings


def main() -> None:
    over = {"host": "0.0.0.0"} if os.environ.get("SPACE_ID") else {}  # a Space's proxy reaches us on all interfaces
    try:
        settings = Settings.from_env(**over)
        import pages

        pages.launch(settings)
    except PetError as e:  # a bad tiers file or setting: one clear message, no traceback
        raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    main()
