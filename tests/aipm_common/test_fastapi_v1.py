"""FastAPI's pydantic.v1 checks answer without importing pydantic.v1, and still refuse a v1 model once it exists."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from tests.support.servers import ROOT


def test_declaring_and_serving_routes_does_not_import_pydantic_v1():
    code = """
import sys
import aipm_common.http
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel
class Item(BaseModel):
    name: str
app = FastAPI()
@app.post("/items", response_model=Item)
def add(item: Item, q: int = 0) -> Item:
    return item
assert TestClient(app).post("/items?q=1", json={"name": "x"}).json() == {"name": "x"}
print("pydantic.v1" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_pydantic_v1_model_is_still_refused():
    from fastapi import FastAPI
    from fastapi.exceptions import FastAPIError

    import aipm_common.http  # noqa: F401 - installs the guard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pydantic import v1

    class Old(v1.BaseModel):
        name: str

    app = FastAPI()
    with pytest.raises(FastAPIError, match="pydantic.v1"):
        @app.post("/old", response_model=Old)  # not an annotation: this module's are strings
        def old():
            return {"name": "x"}
