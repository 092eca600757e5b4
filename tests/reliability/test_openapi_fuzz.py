"""The three services' OpenAPI schemas, read from the running services, drive the fuzzing: every number a caller
may send is bounded in the schema, and bodies and parameters built from each operation's schema (valid ones, and
valid ones with one field swapped for a huge integer, an infinite-looking float, a wrong type) never get a 5xx
(but the contract's own: the worker pool's 504 with the result of a task that ran out of the time it was given).

``from_schema`` turns the subset of JSON Schema FastAPI writes into a hypothesis strategy (hypothesis-jsonschema
does not run with this hypothesis); the swaps are what a schema-valid value can never be (``pr_number`` = 2**63
used to reach SQLite and answer 500).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aipm_common.signing import LAMBDA_API, PR_PROCESSOR, WORKER_POOL
from tests.reliability.stack import TORTURE, record_figures, server_failed

EXAMPLES = 200 if TORTURE else 25
SERVICES = {  # name → (receiver its signed routes are signed for, where its schema is served)
    "pool": (WORKER_POOL, "/openapi.json"),
    "processor": (PR_PROCESSOR, "/openapi.json"),
    "api": (LAMBDA_API, "/api/openapi.json"),
}
OUT_OF_RANGE = [2**63, -(2**63), 2**64, 2**31, -1, 10**40, 1e308, -1e308, 1e-300, "9" * 400, None, True, [], {}]
STREAMS = ("/events",)  # server-sent events stay open while a job lives: not a request/answer to fuzz


def inline(schema: Any, components: dict) -> Any:
    """The schema with every ``#/components/schemas/X`` reference replaced by X itself."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            return inline(components[ref.rsplit("/", 1)[1]], components)
        return {k: inline(v, components) for k, v in schema.items()}
    if isinstance(schema, list):
        return [inline(v, components) for v in schema]
    return schema


def from_schema(schema: dict) -> st.SearchStrategy:
    """Values valid for ``schema`` (anyOf, enum/const, string with length and pattern, bounded numbers, arrays,
    objects with required and optional properties); anything else it does not know becomes any JSON scalar."""
    if "anyOf" in schema or "oneOf" in schema:
        return st.one_of([from_schema(s) for s in schema.get("anyOf") or schema["oneOf"]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        low, high = schema.get("minLength", 0), min(schema.get("maxLength", 80), 300)
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda v: low <= len(v) <= high)
        return st.text(min_size=low, max_size=high)
    if kind == "integer":
        return st.integers(schema.get("minimum", schema.get("exclusiveMinimum", -(2**70)) + 1),
                           schema.get("maximum", schema.get("exclusiveMaximum", 2**70) - 1))
    if kind == "number":
        return st.floats(schema.get("minimum", schema.get("exclusiveMinimum")),
                         schema.get("maximum", schema.get("exclusiveMaximum")), allow_nan=False, allow_infinity=False,
                         exclude_min="exclusiveMinimum" in schema, exclude_max="exclusiveMaximum" in schema)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {})), min_size=schema.get("minItems", 0),
                        max_size=min(schema.get("maxItems", 5), 5))
    if kind == "object" or "properties" in schema:
        props, required = schema.get("properties", {}), set(schema.get("required", []))
        return st.fixed_dictionaries({k: from_schema(v) for k, v in props.items() if k in required},
                                     optional={k: from_schema(v) for k, v in props.items() if k not in required})
    return st.none() | st.booleans() | st.integers() | st.text(max_size=20)


def operations(spec: dict) -> list[dict]:
    """Each operation as ``{"method", "path", "params": [(name, in, schema)], "body": schema | None}``."""
    components = spec.get("components", {}).get("schemas", {})
    found = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            params = [(p["name"], p["in"], inline(p.get("schema", {}), components)) for p in op.get("parameters", [])]
            content = (op.get("requestBody") or {}).get("content", {}).get("application/json")
            body = inline(content["schema"], components) if content else None
            found.append({"method": method.upper(), "path": path, "params": params, "body": body})
    return found


def all_numbers(schema: Any, where: str, *, unbounded_only: bool = False) -> list[str]:
    """Every integer/number in ``schema`` (only those without both a lower and an upper bound with
    ``unbounded_only``), named by where it is."""
    found = []
    if isinstance(schema, dict):
        if schema.get("type") in ("integer", "number"):
            low = "minimum" in schema or "exclusiveMinimum" in schema
            high = "maximum" in schema or "exclusiveMaximum" in schema
            if not (unbounded_only and low and high):
                found.append(where)
        for key, value in schema.items():
            found += all_numbers(value, f"{where}.{key}" if key != "properties" else where,
                                 unbounded_only=unbounded_only)
    elif isinstance(schema, list):
        for value in schema:
            found += all_numbers(value, where, unbounded_only=unbounded_only)
    return found


def unbounded_numbers(schema: Any, where: str) -> list[str]:
    return all_numbers(schema, where, unbounded_only=True)


def request_strategy(op: dict) -> st.SearchStrategy:
    """(path, query, body) for ``op``: schema-valid values, sometimes with one field swapped for an out-of-range one."""
    swap = st.sampled_from(OUT_OF_RANGE)

    def value(schema):
        return st.one_of(from_schema(schema or {}), swap)

    path_params = {n: value(s) for n, where, s in op["params"] if where == "path"}
    query_params = {n: value(s) for n, where, s in op["params"] if where == "query"}
    body = st.none()
    if op["body"] is not None:
        valid = from_schema(op["body"])
        props = list(op["body"].get("properties", {}))
        swapped = (st.tuples(valid, st.sampled_from(props), swap).map(lambda t: {**t[0], t[1]: t[2]})
                   if props else valid)
        body = st.one_of(valid, swapped)
    return st.tuples(st.fixed_dictionaries(path_params), st.fixed_dictionaries({}, optional=query_params), body)


def target_of(op: dict, path_values: dict, query: dict) -> str:
    path = op["path"]
    for name, val in path_values.items():
        path = path.replace("{" + name + "}", quote(str(val), safe="") or "x")
    query = {k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in query.items() if v is not None}
    return path + ("?" + urlencode(query) if query else "")


@pytest.fixture
def stack(make_stack):
    return make_stack(pool_size=1).start_all(KIRO_QUEUE_LIMIT="8")


def fuzz_operation(stack, name: str, op: dict, statuses: dict[str, dict[int, int]]) -> None:
    receiver, key = SERVICES[name][0], f"{name} {op['method']} {op['path']}"

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(request=request_strategy(op))
    def fuzz(request):
        path_values, query, body = request
        target = target_of(op, path_values, query)
        raw = json.dumps(body).encode() if body is not None else b""
        headers = {**stack.sign(receiver, op["method"], target, raw), "Content-Type": "application/json"}
        response = httpx.request(op["method"], stack.url(name) + target, content=raw or None, headers=headers,
                                 timeout=60)
        stack._record(response)
        counts = statuses.setdefault(key, {})
        counts[response.status_code] = counts.get(response.status_code, 0) + 1
        assert not server_failed(response), (key, target, raw[:300], response.status_code, response.text[:500])

    fuzz()


def schemas(stack) -> dict[str, dict]:
    return {name: httpx.get(stack.url(name) + where, timeout=30).json() for name, (_, where) in SERVICES.items()}


@pytest.mark.timeout(600)
def test_every_number_a_caller_sends_is_bounded_and_no_schema_built_request_gets_a_5xx(stack):
    specs = schemas(stack)
    numbers = [w for spec in specs.values() for op in operations(spec)
               for w in [w for n, _, s in op["params"] for w in all_numbers(s, n)] + all_numbers(op["body"], "body")]
    assert len(numbers) >= 8, numbers  # pr_number, attempts, duration_s, credits, timeout_s, limit, before, after…
    unbounded = [f"{name} {op['method']} {op['path']} {where}"
                 for name, spec in specs.items() for op in operations(spec)
                 for where in [w for n, _, s in op["params"] for w in unbounded_numbers(s, n)]
                 + unbounded_numbers(op["body"], "body")]
    assert unbounded == [], unbounded

    statuses: dict[str, dict[int, int]] = {}
    for name, spec in specs.items():
        for op in operations(spec):
            if not op["path"].endswith(STREAMS):
                fuzz_operation(stack, name, op, statuses)
    assert stack.procs["processor"].proc.poll() is None and stack.procs["pool"].proc.poll() is None
    record_figures("openapi_fuzz", examples_per_operation=EXAMPLES, operations=len(statuses), statuses=statuses)
