"""The UI's native ES modules, without a browser: index.html loads one module entry, every ``import`` names a file
that ships in ``frontend/`` (the whole folder is what the website deploys), every module under ``frontend/js`` is
reached from the entry (none is dead or forgotten), nothing runs inline, and the API that serves the UI locally
gives each module a JavaScript content type (a browser refuses to run a module served as anything else)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from tests.support.servers import ROOT

FRONTEND = ROOT / "frontend"
IMPORT = re.compile(r"""^\s*(?:import|export)\b[^'"]*?\bfrom\s+["']([^"']+)["']|^\s*import\s+["']([^"']+)["']""", re.M)


class _Scripts(HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self._inline = False
        self.inline_code = ""

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self.scripts.append(dict(attrs))
            self._inline = "src" not in dict(attrs)

    def handle_endtag(self, tag):
        if tag == "script":
            self._inline = False

    def handle_data(self, data):
        if self._inline:
            self.inline_code += data


def _scripts():
    parser = _Scripts()
    parser.feed((FRONTEND / "index.html").read_text())
    return parser


def _graph(entry):
    """Every module reached from ``entry`` (paths relative to frontend/), each with the specifiers it imports."""
    seen: dict = {}
    todo = [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        source = path.read_text()
        specs = [a or b for a, b in IMPORT.findall(source)]
        seen[path] = specs
        for spec in specs:
            assert spec.startswith("./") or spec.startswith("../"), f"{path.name} imports {spec!r}: only relative " \
                "modules of frontend/ (no bare names: there is no build step to resolve them)"
            target = (path.parent / spec).resolve()
            assert target.is_file(), f"{path.relative_to(FRONTEND)} imports {spec}, which is not in frontend/"
            assert FRONTEND.resolve() in target.parents, f"{spec} is outside frontend/ and would not be deployed"
            todo.append(target)
    return seen


def test_index_html_loads_one_module_entry_and_no_inline_script():
    parser = _scripts()
    assert parser.scripts == [{"type": "module", "src": "js/main.js"}]
    assert not parser.inline_code.strip()


def test_every_import_resolves_inside_frontend_and_every_module_is_used():
    graph = _graph((FRONTEND / "js" / "main.js").resolve())
    shipped = {p.resolve() for p in (FRONTEND / "js").rglob("*.js")}
    assert shipped - set(graph) == set(), "modules no page reaches: delete them or import them"
    assert len(graph) >= 6, "the UI is split into a module per concern"
    assert not (FRONTEND / "app.js").exists()


def test_the_api_serves_the_modules_with_a_javascript_content_type(monkeypatch):
    import mimetypes

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lambda_fn.app import _mount_ui

    # A host whose mime table says nothing useful about .js (a bare container, a Windows registry's text/plain).
    mimetypes.guess_type("x.js")  # the table is read once; this patches the one guess_type reads
    monkeypatch.setitem(mimetypes._db.types_map[True], ".js", "text/plain")
    assert mimetypes.guess_type("x.js")[0] == "text/plain"
    app = FastAPI()
    _mount_ui(app, FRONTEND, {"apiUrl": ""})
    with TestClient(app) as client:
        for module in sorted((FRONTEND / "js").glob("*.js")):
            answer = client.get(f"/js/{module.name}")
            assert answer.status_code == 200
            assert answer.headers["content-type"].split(";")[0] == "text/javascript", module.name
        assert client.get("/").headers["content-type"].startswith("text/html")
        assert client.get("/config.json").json() == {"apiUrl": ""}
