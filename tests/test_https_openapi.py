"""The OpenAPI document shipped with the HTTPS server, checked against the running server:
a valid OpenAPI 3.1 document of exactly the seven Table 3 endpoints; every route of the
application documented and every documented operation routed; every answer of a running node
(rack, CDU, site) carries a status documented for its operation and a body that validates
against the documented schema; every documented status is seen at least once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi

from edge_runtime.assembly import assemble, load_node_config
from edge_runtime.core.commands import SetOutput
from edge_runtime.servers.https.service import HttpsService
from tests.https_env import EXAMPLES, Env, Running, fakes, running
from tests.mosquitto import Broker, mosquitto_fixture  # noqa: F401
from tests.test_https_server import announcement, battery

pytestmark = pytest.mark.timeout(60)

TABLE_3 = {("/PSWD/power/realtime", "get"), ("/PSWD/workload/announce", "post"),
           ("/PSWD/thermal/status", "get"), ("/PSWD/thermal/control", "post"),
           ("/PSWD/grid/status", "get"), ("/PSWD/grid/signal", "post"),
           ("/PSWD/battery/control", "post")}


def document() -> dict[str, Any]:
    text = (resources.files("edge_runtime.servers.https") / "openapi.json").read_text()
    doc: dict[str, Any] = json.loads(text)
    return doc


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield path, method, op


def test_the_document_is_valid_openapi_31_of_the_table_3_endpoints() -> None:
    doc = document()
    validate_openapi(doc)  # raises naming what is wrong
    assert doc["openapi"].startswith("3.1")
    assert {(p, m) for p, m, _ in operations(doc)} == TABLE_3
    for path, method, op in operations(doc):
        assert op.get("security") == [{"bearerJWT": []}], (path, method)
        assert {"401", "429"} <= set(op["responses"]), (path, method)


def test_every_route_is_documented_and_every_operation_routed(tmp_path: Path) -> None:
    env = Env.create(tmp_path)
    node = assemble(load_node_config(EXAMPLES / "rack.toml", overrides=env.https_overrides()),
                    driver_factory=fakes, watchdog_thread=False)
    service = node.services["https"]
    assert isinstance(service, HttpsService)
    app = service.api.application()
    routed = {(r.resource.canonical, r.method.lower()) for r in app.router.routes()
              if r.resource is not None and r.method != "HEAD"}
    assert routed == {(p, m) for p, m, _ in operations(document())}


class Checker:
    """Checks answers against the document and remembers which statuses were seen."""

    def __init__(self) -> None:
        self.doc = document()
        self.seen: set[tuple[str, str, int]] = set()

    def schema(self, ref_holder: dict[str, Any]) -> Draft202012Validator:
        schema = {**ref_holder, "components": self.doc["components"]}
        return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)

    async def check(self, r: Running, method: str, path: str, **kw: Any) -> int:
        status, body, _ = await r.call(method, path, **kw)
        bare = path.split("?")[0]
        responses = self.doc["paths"][bare][method.lower()]["responses"]
        assert str(status) in responses, (method, path, status, body)
        content = responses[str(status)]["content"]["application/json"]["schema"]
        errors = sorted(self.schema(content).iter_errors(body), key=str)
        assert not errors, (method, path, status, [e.message for e in errors[:3]])
        self.seen.add((bare, method.lower(), status))
        return status


@pytest.mark.anyio
async def test_every_answer_is_documented(tmp_path: Path, mosquitto: Broker) -> None:
    env, c = Env.create(tmp_path), Checker()
    async with running(env, "rack.toml", max_body_bytes=2048) as r:
        assert await c.check(r, "GET", "/PSWD/power/realtime", role="grid_operator") == 200
        assert await c.check(r, "GET", "/PSWD/power/realtime?window_s=99",
                             role="grid_operator") == 422
        assert await c.check(r, "GET", "/PSWD/grid/status") == 401
        assert await c.check(r, "GET", "/PSWD/grid/status", role="municipal_partner") == 200
        assert await c.check(r, "GET", "/PSWD/thermal/status", role="grid_operator") == 404
        for kind, path in (("battery_control", "/PSWD/battery/control"),
                           ("grid_signal", "/PSWD/grid/signal")):
            post = {"role": "grid_operator"}
            assert await c.check(r, "POST", path, body=battery(r, kind=kind), **post) == 202
            assert await c.check(r, "POST", path, raw=b"{", **post) == 400
            assert await c.check(r, "POST", path, raw=b" " * 3000, **post) == 413
            assert await c.check(r, "POST", path, body=battery(r, 999.0, kind=kind),
                                 **post) == 422
            assert await c.check(r, "POST", path, role="municipal_partner",
                                 body=battery(r, role="municipal_partner", kind=kind)) == 403
        assert await c.check(r, "POST", "/PSWD/thermal/control", role="infrastructure_manager",
                             body={}) == 404
        assert await c.check(r, "POST", "/PSWD/workload/announce", role="workload_operator",
                             body=announcement()) == 404
        r.node.commands.submit(SetOutput("battery.w_set_kw", 5.0, source="local"))
        await r.until(lambda: r.node.manual.holds().get("battery.w_set_kw") == "local")
        assert await c.check(r, "POST", "/PSWD/battery/control", role="grid_operator",
                             body=battery(r)) == 409
    async with running(env, "cdu.toml") as r:
        assert await c.check(r, "GET", "/PSWD/thermal/status", role="grid_operator") == 200
        body = env.signed("infrastructure_manager", "cdu-01", "thermal_control",
                          {"action": "set_output", "point": "pump1.speed_ref", "value": 40.0})
        assert await c.check(r, "POST", "/PSWD/thermal/control", role="infrastructure_manager",
                             body=body) == 202
        assert await c.check(r, "POST", "/PSWD/thermal/control", role="municipal_partner",
                             body=body) == 403
    async with running(env, "site.toml", overrides={"mqtt": {"port": mosquitto.port}},
                       rate_per_s=0.5, burst=8) as r:
        url = "/PSWD/workload/announce"
        assert await c.check(r, "POST", url, role="workload_operator",
                             body=announcement("job-openapi")) == 200
        assert await c.check(r, "POST", url, role="workload_operator", raw=b"[") == 400
        bad = announcement()
        del bad["workload_type"]
        assert await c.check(r, "POST", url, role="workload_operator", body=bad) == 422
        assert await c.check(r, "POST", url, role="municipal_partner",
                             body=announcement()) == 403
        assert await c.check(r, "GET", "/PSWD/grid/status", role="grid_operator") == 200
        assert await c.check(r, "GET", "/PSWD/power/realtime", role="grid_operator") == 200
        statuses = [await c.check(r, "GET", "/PSWD/grid/status", role="grid_operator")
                    for _ in range(3)]
        assert statuses[-1] == 429
    documented = {int(s) for _, _, op in operations(c.doc) for s in op["responses"]}
    assert documented == {s for _, _, s in c.seen}, documented ^ {s for _, _, s in c.seen}
    assert {(p, m) for p, m, s in c.seen if s in (200, 202)} >= TABLE_3
