"""The service's routes, one router per resource: health, models (and their pairs), jobs. The
annotation pages are an ASGI mount (:mod:`service.annotate_mount`)."""
from __future__ import annotations

from ..schemas import Message

ERRORS = {401: {"model": Message, "description": "missing or wrong API key"},
          404: {"model": Message}, 413: {"model": Message, "description": "request body too large"}}
