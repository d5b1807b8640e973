"""Property tests of the queue API over real HTTP, generated from its own OpenAPI document (hypothesis).

For every operation the document lists, on SQLite and on PostgreSQL:

* requests valid per the document (drawn from its JSON schemas) are answered, never
  with a 5xx;
* for every field — body properties (nested ones too), query and path parameters —
  wrong-type and out-of-range values (and NaN, 2**70, 1e308, booleans for integers,
  NUL and lone surrogates in text, too long, unknown keys) are 422 naming that field
  (a path parameter that no longer matches a route may be 404), never a 5xx.

No request list is written by hand: the fields, their types and their bounds all
come from ``/openapi.json``.
"""

from __future__ import annotations

import json
import urllib.parse
from functools import cache
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.queue.conftest import ApiServer, W, auth, db_url

pytestmark = [pytest.mark.services, pytest.mark.slow]

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ----------------------------------------------------------------------------- the document


def _document() -> dict[str, Any]:
    """The service's OpenAPI document as the app makes it (the test checks the served one is the same)."""
    from backends.queue.api import create_app
    from backends.queue.auth import TokenSet
    from backends.queue.store import QueueStore
    from tests.integration.queue.conftest import TOKEN_ENTRIES

    return create_app(QueueStore("sqlite:///:memory:"), TokenSet(TOKEN_ENTRIES)).openapi()


DOC = _document()


def resolve(schema: Any) -> Any:
    """``schema`` with every ``$ref`` into components inlined (the queue's schemas are not recursive)."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            return resolve(DOC["components"]["schemas"][name])
        return {k: resolve(v) for k, v in schema.items() if k not in ("title", "description", "default")}
    if isinstance(schema, list):
        return [resolve(s) for s in schema]
    return schema


def operations() -> list[dict[str, Any]]:
    out = []
    for path, methods in DOC["paths"].items():
        if not path.startswith(W):
            continue
        for method, op in methods.items():
            body = ((op.get("requestBody") or {}).get("content") or {}).get("application/json", {}).get("schema")
            out.append(
                {
                    "id": f"{method.upper()} {path.removeprefix(W)}",
                    "method": method.upper(),
                    "path": path,
                    "params": [
                        {
                            "name": p["name"],
                            "in": p["in"],
                            "required": p.get("required", False),
                            "schema": resolve(p["schema"]),
                        }
                        for p in op.get("parameters", [])
                    ],
                    "body": resolve(body) if body else None,
                    "body_required": (op.get("requestBody") or {}).get("required", False),
                }
            )
    return out


OPERATIONS = operations()


def _nullable(schema: dict) -> tuple[dict, bool]:
    """The non-null alternative of ``anyOf [X, null]`` and whether null is allowed."""
    alts = schema.get("anyOf")
    if alts and any(a.get("type") == "null" for a in alts):
        rest = [a for a in alts if a.get("type") != "null"]
        return (rest[0] if len(rest) == 1 else {"anyOf": rest}), True
    return schema, False


def targets() -> list[tuple[str, str, tuple, dict, bool]]:
    """``(operation id, where, path of keys, schema, nullable)`` of every field, nested ones included."""
    out = []

    def walk(op_id: str, where: str, keys: tuple, schema: dict) -> None:
        inner, nullable = _nullable(schema)
        out.append((op_id, where, keys, inner, nullable))
        if inner.get("type") == "object":
            for name, prop in (inner.get("properties") or {}).items():
                walk(op_id, where, (*keys, name), prop)
        elif inner.get("type") == "array" and (inner.get("items") or {}).get("type") == "object":
            walk(op_id, where, (*keys, 0), inner["items"])

    for op in OPERATIONS:
        for p in op["params"]:
            out.append((op["id"], p["in"], (p["name"],), _nullable(p["schema"])[0], True))  # text: no JSON null
        if op["body"]:
            inner, _ = _nullable(op["body"])
            for name, prop in (inner.get("properties") or {}).items():
                walk(op["id"], "body", (name,), prop)
    return out


TARGETS = targets()
BY_ID = {op["id"]: op for op in OPERATIONS}


# ----------------------------------------------------------------------------- strategies


JSON_VALUES = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20)
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)


@cache
def _valid(schema_json: str) -> st.SearchStrategy:
    return _from_schema(json.loads(schema_json))


def valid(schema: dict) -> st.SearchStrategy:
    """Values a JSON schema accepts, for the subset FastAPI writes (types, bounds, lengths, patterns, enums, anyOf)."""
    return _valid(json.dumps(schema, sort_keys=True))


def _from_schema(schema: dict) -> st.SearchStrategy:
    if "anyOf" in schema:
        return st.one_of([valid(s) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    make = {"null": lambda _s: st.none(), "boolean": lambda _s: st.booleans(), "integer": _valid_integer,
            "number": _valid_number, "string": _valid_string, "array": _valid_array, "object": _valid_object}
    return make.get(schema.get("type"), lambda _s: JSON_VALUES)(schema)


def _valid_integer(schema: dict) -> st.SearchStrategy:
    lo, hi = schema.get("minimum", schema.get("exclusiveMinimum")), schema.get("maximum")
    lo = None if lo is None else int(lo) + (1 if "exclusiveMinimum" in schema else 0)
    return st.integers(min_value=lo, max_value=None if hi is None else int(hi))


def _valid_number(schema: dict) -> st.SearchStrategy:
    lo, hi = schema.get("minimum", schema.get("exclusiveMinimum")), schema.get("maximum")
    return st.floats(min_value=lo, max_value=hi, exclude_min="exclusiveMinimum" in schema, allow_nan=False,
                     allow_infinity=False)


def _valid_string(schema: dict) -> st.SearchStrategy:
    if "pattern" in schema:
        return st.from_regex(schema["pattern"].replace("$", r"\Z"), fullmatch=False)
    return st.text(min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 30), 30))


def _valid_array(schema: dict) -> st.SearchStrategy:
    return st.lists(valid(schema.get("items") or {}), min_size=schema.get("minItems", 0),
                    max_size=min(schema.get("maxItems", 5), 5))


def _valid_object(schema: dict) -> st.SearchStrategy:
    props = schema.get("properties") or {}
    if not props:
        return st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4)
    required = set(schema.get("required") or [])
    return st.fixed_dictionaries({k: valid(v) for k, v in props.items() if k in required},
                                 optional={k: valid(v) for k, v in props.items() if k not in required})


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))


def _deep(levels: int) -> dict:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return {"x": value}


def bad_values(schema: dict, nullable: bool, *, text_only: bool = False) -> st.SearchStrategy:
    """Values the field's schema refuses: of another type, or out of its bounds.

    Args:
        text_only: A query or path parameter: everything travels as text.
    """
    options: list[st.SearchStrategy] = []
    if not nullable and not text_only:
        options.append(st.none())
    if "enum" in schema:
        options.append(st.text(min_size=1, max_size=12).filter(lambda s: s not in schema["enum"]))
    make = {"integer": _bad_integer, "number": _bad_number, "string": _bad_string, "boolean": _bad_boolean,
            "array": _bad_array, "object": _bad_object}.get(schema.get("type"))
    if make is not None:
        options += make(schema, text_only)
    return st.one_of(options) if options else st.nothing()


def _bad_integer(schema: dict, text_only: bool) -> list[st.SearchStrategy]:
    hi, lo = schema.get("maximum"), schema.get("minimum", schema.get("exclusiveMinimum"))
    out = [st.sampled_from([2**70, -(2**70), 1e308, -1e308])]
    if hi is not None:
        out.append(st.integers(min_value=int(hi) + 1))
    if lo is not None:
        out.append(st.integers(max_value=int(lo) - (0 if "exclusiveMinimum" in schema else 1)))
    if text_only:
        return [*out, st.sampled_from(["1.5", "true", "nan", "inf", "", "1e308", "0x10", "ten"])]
    return [*out, st.booleans(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
            st.lists(st.integers(), max_size=2)]


def _bad_number(schema: dict, text_only: bool) -> list[st.SearchStrategy]:
    hi, lo = schema.get("maximum"), schema.get("minimum", schema.get("exclusiveMinimum"))
    out = [st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, -1e308])]
    if hi is not None:
        out.append(st.floats(min_value=float(hi), exclude_min=True, allow_infinity=False, allow_nan=False))
    if lo is not None:  # below an inclusive minimum (never -0.0, which equals 0), or at an exclusive one
        top = float(lo) - 1e-6 if "minimum" in schema else float(lo)
        out.append(st.floats(max_value=top, allow_infinity=False, allow_nan=False))
    if text_only:
        return [*out, st.sampled_from(["true", "", "ten", "1,5", "nan", "infinity"])]
    return [*out, st.booleans(), st.text(max_size=8), st.lists(st.floats(), max_size=2), st.just({})]


def _bad_string(schema: dict, text_only: bool) -> list[st.SearchStrategy]:
    import re

    out = [st.just("a\x00b")]
    if "maxLength" in schema:
        n = schema["maxLength"]
        out.append(st.text(alphabet="abcdef0123", min_size=n + 1, max_size=n + 40))
    if "pattern" in schema:
        rx = re.compile(schema["pattern"])
        out.append(st.text(min_size=1, max_size=40).filter(lambda s: not rx.search(s)))
    if schema.get("minLength"):
        out.append(st.just(""))
    if text_only:  # in a URL a lone surrogate arrives as U+FFFD, which is text like any other
        return out
    return [*out, st.just("\ud800"), st.integers(), st.booleans(), st.floats(),
            st.lists(st.text(max_size=3), max_size=2), st.just({})]


def _bad_boolean(_schema: dict, text_only: bool) -> list[st.SearchStrategy]:
    if text_only:
        return [st.sampled_from(["maybe", "2", "-1", "yes please", "tru"])]
    return [st.integers(), st.text(max_size=5), st.floats()]


def _bad_array(schema: dict, _text_only: bool) -> list[st.SearchStrategy]:
    out = [JSON_SCALARS.filter(lambda v: v is not None), st.just({})]
    if schema.get("minItems"):
        out.append(st.just([]))
    items = schema.get("items") or {}
    if "maxItems" in schema:
        out.append(valid(items).map(lambda v, n=schema["maxItems"] + 1: [v] * n))
    if items:
        out.append(bad_values(items, False).map(lambda v: [v]))
    return out


def _bad_object(schema: dict, _text_only: bool) -> list[st.SearchStrategy]:
    out = [JSON_SCALARS.filter(lambda v: v is not None), st.lists(st.integers(), max_size=2)]
    props = schema.get("properties") or {}
    if schema.get("additionalProperties") is False:
        out.append(valid(schema).map(lambda v: {**v, "surely_unknown": 1}))
    if props:
        name = sorted(props)[0]
        inner, can_null = _nullable(props[name])
        out.append(st.tuples(valid(schema), bad_values(inner, can_null)).map(lambda t, n=name: {**t[0], n: t[1]}))
    else:  # free-form JSON (metrics): what JSON has but the databases cannot store
        out.append(st.sampled_from([{"x": float("nan")}, {"x": float("inf")}, {"\ud800": 1}, {"x": "a\x00b"},
                                    _deep(40)]))
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _set(body: Any, keys: tuple, value: Any) -> Any:
    """``body`` with the field at ``keys`` (property names, 0 for the first item of an array) set to ``value``."""
    if not keys:
        return value
    key, rest = keys[0], keys[1:]
    if isinstance(key, int):
        items = list(body) if isinstance(body, list) and body else [None]
        items[0] = _set(items[0] if isinstance(items[0], (dict, list)) else {}, rest, value)
        return items
    out = dict(body) if isinstance(body, dict) else {}
    out[key] = _set(out.get(key, {}), rest, value) if rest else value
    return out


@st.composite
def requests(draw, op: dict) -> dict[str, Any]:
    """A request valid per the document: path and query parameters and a body from their schemas."""
    path_params, query = {}, {}
    for p in op["params"]:
        if p["in"] == "path":
            path_params[p["name"]] = _text(draw(valid(p["schema"])))
        elif p["required"] or draw(st.booleans()):
            query[p["name"]] = _text(draw(valid(p["schema"])))
    if "dry_run" in {p["name"] for p in op["params"]}:
        query["dry_run"] = "true"  # a generated matrix may hold a million configs: check it, do not write it
    body = draw(valid(op["body"])) if op["body"] and (op["body_required"] or draw(st.booleans())) else None
    return {"op": op, "path_params": path_params, "query": query, "body": body}


def send(c: httpx.Client, req: dict[str, Any]) -> httpx.Response:
    """The request over HTTP: parameters percent-encoded as they are (surrogates too), the body as JSON text."""
    path = req["op"]["path"]
    for name, value in req["path_params"].items():
        path = path.replace("{" + name + "}", urllib.parse.quote(value, safe="", errors="surrogatepass"))
    if req["query"]:
        path += "?" + urllib.parse.urlencode(req["query"], errors="surrogatepass")
    kw: dict[str, Any] = {}
    if req["body"] is not None:
        # json.dumps escapes lone surrogates and writes NaN/Infinity as Python's json reads them
        kw["content"] = json.dumps(req["body"]).encode()
        kw["headers"] = {"content-type": "application/json"}
    return c.request(req["op"]["method"], path, **kw)


# ----------------------------------------------------------------------------- the server


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request, tmp_path_factory):
    """One API per database, with a sweep in it: some configs pending, running, completed and failed."""
    with (
        ApiServer(db_url(request.param, request, tmp_path_factory.mktemp("props"))) as api,
        api.client("admin") as admin,
        api.client("worker") as w,
    ):
        admin.post(
            f"{W}/populate/mv1",
            json={
                "hardware": ["H100:1", "A100:1"],
                "frameworks": ["vllm"],
                "batch_sizes": [1, 2],
                "sequence_lengths": [1024],
            },
        ).raise_for_status()
        batch = w.post(f"{W}/configs/get-batch", json={"limit": 6}).json()
        for c, status in zip(batch, ("completed", "failed", "completed"), strict=False):
            w.post(
                f"{W}/configs/{c['id']}/status",
                json={"status": status, "lease_id": c["lease_id"], "metrics": {"tps": 1.0}},
            ).raise_for_status()
        api.db = request.param
        yield api


@pytest.fixture(scope="module")
def admin_client(served):
    with served.client("admin") as c:
        yield c


def test_the_served_document_is_the_one_the_tests_were_generated_from(served):
    doc = httpx.get(f"{served.url}/openapi.json").json()
    assert doc == json.loads(json.dumps(DOC))
    assert len(OPERATIONS) == 14 and len(TARGETS) >= 40, (len(OPERATIONS), len(TARGETS))


@pytest.mark.parametrize("op_id", [op["id"] for op in OPERATIONS])
def test_valid_requests_are_never_a_server_error(served, admin_client, op_id):
    op = BY_ID[op_id]

    @SETTINGS
    @given(req=requests(op))
    def check(req):
        r = send(admin_client, req)
        assert r.status_code < 500, (req, r.status_code, r.text[:500])
        assert r.status_code in (200, 201, 404, 409, 422), (req, r.status_code, r.text[:500])

    check()
    assert httpx.get(f"{served.url}/health").json() == {"status": "ok"}


@pytest.mark.parametrize(
    "op_id,where,keys,schema,nullable", TARGETS, ids=[f"{t[0]} {t[1]}:{'.'.join(map(str, t[2]))}" for t in TARGETS]
)
def test_wrong_type_or_out_of_range_is_422_naming_the_field(served, admin_client, op_id, where, keys, schema, nullable):
    op = BY_ID[op_id]
    text_only = where in ("query", "path")

    @SETTINGS
    @given(req=requests(op), bad=bad_values(schema, nullable, text_only=text_only))
    def check(req, bad):
        if where == "body":
            req = {**req, "body": _set(req["body"] if isinstance(req["body"], dict) else {}, keys, bad)}
        else:
            req = {
                **req,
                where if where == "query" else "path_params": {
                    **req["query" if where == "query" else "path_params"],
                    keys[0]: _text(bad),
                },
            }
        r = send(admin_client, req)
        assert r.status_code < 500, (req, r.status_code, r.text[:500])
        if (
            where == "path"
            and r.status_code in (404, 405)
            and r.json().get("detail") in ("Not Found", "Method Not Allowed")
        ):
            return  # the value no longer matches the route (an empty segment, a slash)
        assert r.status_code == 422, (req, r.status_code, r.text[:500])
        locs = [tuple(x for x in e["loc"] if not isinstance(x, int)) for e in r.json()["detail"]]
        want = (where, *(k for k in keys if not isinstance(k, int)))
        assert any(loc[: len(want)] == want for loc in locs), (want, locs)

    check()


@pytest.mark.parametrize("op_id", [op["id"] for op in OPERATIONS])
def test_an_unknown_field_or_parameter_is_422_naming_it(served, admin_client, op_id):
    op = BY_ID[op_id]

    @SETTINGS
    @given(req=requests(op), name=st.from_regex(r"\A[a-z][a-z_]{2,15}\Z"))
    def check(req, name):
        known = {p["name"] for p in op["params"]} | set((_nullable(op["body"] or {})[0]).get("properties") or {})
        if name in known:
            return
        if op["body"] and isinstance(req["body"], dict):
            req = {**req, "body": {**req["body"], name: 1}}
            where = "body"
        else:
            req = {**req, "query": {**req["query"], name: "1"}}
            where = "query"
        r = send(admin_client, req)
        assert r.status_code == 422, (req, r.status_code, r.text[:300])
        assert any(e["loc"] == [where, name] and f"unknown field '{name}'" in e["msg"] for e in r.json()["detail"]), (
            r.text
        )

    check()


def test_the_sweep_survived_the_barrage(served, admin_client):
    """After every property test: the kept counts still match a recount, and claims still work."""
    prog = admin_client.get(f"{W}/progress/mv1").json()
    listed = admin_client.get(f"{W}/configs/mv1", params={"limit": 10000}).json()
    counts = {s: sum(1 for c in listed if c["status"] == s) for s in ("pending", "running", "completed", "failed")}
    assert {k: prog[k] for k in counts} == counts
    assert prog["total"] >= 10
    r = admin_client.post(f"{W}/configs/get-batch", json={"limit": 1}, headers=auth("worker"))
    assert r.status_code == 200
