"""PET Studio web app (also the Hugging Face Spaces entry point): `python app.py`."""

import os

from pet.config import ConfigError, Settings

if __name__ == "__main__":
    try:
        settings = Settings.from_env()
    except ConfigError as e:
        raise SystemExit(f"error: {e}")
    if os.environ.get("SPACE_ID"):  # on a Space the proxy needs us on all interfaces
        settings = Settings.from_env(host="0.0.0.0")
    import pages

    pages.launch(settings)
