"""Bounded number types for the three services' request models: every integer and float a caller sends has a range.

Owns the ranges, not the checks: pydantic turns a value outside them into a 422 at the edge. Without them an integer
such as 2**63 reached SQLite (OverflowError, a 500) and an infinite float reached arithmetic. Keep this module free of
imports beyond pydantic: the Lambda loads it on a cold start.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

INT32_MAX = 2**31 - 1
# A pull request's number on GitHub is a 32-bit integer; the local forge numbers from 1.
PrNumber = Annotated[int, Field(ge=1, le=INT32_MAX)]
# Attempts, counts: small non-negative integers in practice; the bound keeps them inside SQLite's and JSON's range.
Count = Annotated[int, Field(ge=0, le=INT32_MAX)]
# Durations and timeouts in seconds: finite, non-negative, at most a year.
MAX_SECONDS = 366 * 24 * 3600.0
Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)]
# An agent's credits: finite and non-negative.
Credits = Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)]
