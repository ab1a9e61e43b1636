"""The ASGI entry point, `uvicorn service.asgi:app`: the one module that reads the environment."""

from .app import create_app
from .logs import configure_logging
from .settings import load_settings

settings = load_settings()
configure_logging(settings.log_level, settings.log_format)
app = create_app(settings)
