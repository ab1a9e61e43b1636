"""The ASGI entry point, `uvicorn service.asgi:app`: the one module that reads the environment."""

from .app import create_app
from .settings import load_settings

app = create_app(load_settings())
