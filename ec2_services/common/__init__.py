"""What every part shares: request signing, settings, logging and the HTTP edge (body limit, errors).

Imported by both EC2 services and by the Lambda; it depends only on fastapi/pydantic/httpx, never on
host-only packages (ptyprocess, pyte, uvicorn) at import time.
"""
