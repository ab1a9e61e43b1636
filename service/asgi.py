"""The ASGI entry point, `uvicorn service.asgi:app`: the one module that reads the environment."""

import sys

from .app import create_app
from .logs import configure_logging
from .settings import SettingsError, load_settings

try:
    settings = load_settings()
except SettingsError as error:
    print(error, file=sys.stderr)
    sys.exit(SettingsError.EXIT_CODE)
configure_logging(settings.log_level, settings.log_format)
app = create_app(settings)
