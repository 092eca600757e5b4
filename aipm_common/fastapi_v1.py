"""FastAPI without ``pydantic.v1``: FastAPI (0.12x and later) asks of every route parameter and response it declares,
and of every value it encodes, whether it is a ``pydantic.v1`` model — by importing ``pydantic.v1``, which costs a
Lambda cold start ~15–20 ms of CPU (P5) for models no part of AIPM uses.

No ``pydantic.v1`` model can exist before something has imported ``pydantic.v1``: until then the answer is "no"
without the import, and from then on FastAPI's own check answers (so a v1 model is still refused as FastAPI refuses
it). Installed by ``aipm_common.http`` on import; a FastAPI without these functions is left as it is.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def _guarded(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def is_v1(value: Any) -> bool:
        return "pydantic.v1" in sys.modules and check(value)

    is_v1.__wrapped__ = check  # type: ignore[attr-defined]
    return is_v1


def install() -> bool:
    """Guard FastAPI's two checks (once); ``True`` when they are guarded."""
    try:
        from fastapi import encoders  # noqa: PLC0415
        from fastapi._compat import shared  # noqa: PLC0415
    except ImportError:  # pragma: no cover - a FastAPI laid out otherwise
        return False
    names = ("is_pydantic_v1_model_class", "is_pydantic_v1_model_instance")
    if not all(callable(getattr(shared, name, None)) for name in names) or not hasattr(
            encoders, "is_pydantic_v1_model_instance"):
        return False
    for name in names:
        if not hasattr(getattr(shared, name), "__wrapped__"):
            setattr(shared, name, _guarded(getattr(shared, name)))
    encoders.is_pydantic_v1_model_instance = shared.is_pydantic_v1_model_instance
    return True
