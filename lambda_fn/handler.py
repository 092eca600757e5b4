"""The Lambda entry: ``lambda_fn.handler.handler`` is Mangum around the app, built once at import (cold start).

A missing secret or a bad setting fails the import with a message naming the variable: the Lambda does not
start half-configured. Lifespan is off: there is nothing to start per event.
"""

from __future__ import annotations

from aipm_common.logging import setup_logging
from aipm_common.settings import load_settings
from lambda_fn.app import build_handler
from lambda_fn.settings import LambdaSettings

_settings = load_settings(LambdaSettings)
setup_logging("lambda-api", level=_settings.aipm_log_level, json_lines=True)
handler = build_handler(_settings)
app = handler.app
