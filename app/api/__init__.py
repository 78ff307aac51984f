"""The HTTP API's pure parts: request/response schemas, cursor encoding, validation and its config.

No Ray imports: the Ray Serve ingress (deployments/ingress.py) is a thin shell over these.
"""
from app.api.config import ApiConfig
from app.api.cursor import Cursor, CursorCodec, InvalidCursor

__all__ = ["ApiConfig", "Cursor", "CursorCodec", "InvalidCursor"]
