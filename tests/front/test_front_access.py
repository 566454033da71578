"""Who may call what: API keys on /v1, the admin key (or loopback only) on the admin routes, open
/health and /metrics unless closed, CORS only for allowed origins."""

from __future__ import annotations

import json
import os
import socket

import httpx
import openai
import pytest

from rawhttp import completion_body, post, request
from support import MODEL, start_server

API_KEY = "sk-test-api-key"
ADMIN_KEY = "admin-test-key"
ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def keyed():
    with start_server("--api-key", API_KEY, "--admin-api-key", ADMIN_KEY,
                      "--allowed-origins", ORIGIN) as running:
        yield running


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_v1_needs_the_api_key(keyed):
    assert httpx.get(keyed.url + "/v1/models").status_code == 401
    assert httpx.get(keyed.url + "/v1/models", headers=bearer("wrong")).status_code == 401
    assert httpx.get(keyed.url + "/v1/models", headers=bearer(ADMIN_KEY)).status_code == 401
    reply = httpx.post(keyed.url + "/v1/completions", json=json.loads(completion_body()))
    assert reply.status_code == 401
    assert reply.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(keyed.url + "/v1/models", headers=bearer(API_KEY)).status_code == 200


def test_tokenize_routes_need_the_api_key(keyed):
    for path, body in (("/tokenize", {"prompt": "hi"}), ("/detokenize", {"tokens": [1]})):
        assert httpx.post(keyed.url + path, json=body).status_code == 401
        assert httpx.post(keyed.url + path, json=body, headers=bearer(API_KEY)).status_code == 200
    assert httpx.get(keyed.url + "/version").status_code == 200


def test_the_openai_client_works_with_the_key(keyed):
    with openai.OpenAI(base_url=keyed.url + "/v1", api_key=API_KEY, max_retries=0) as client:
        completion = client.completions.create(model=MODEL, prompt="Hello", max_tokens=2)
        assert completion.choices[0].finish_reason == "length"
    with openai.OpenAI(base_url=keyed.url + "/v1", api_key="wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            client.completions.create(model=MODEL, prompt="Hello", max_tokens=2)


def test_health_and_metrics_stay_open(keyed):
    assert httpx.get(keyed.url + "/health").status_code == 200
    assert httpx.get(keyed.url + "/metrics").status_code == 200


def test_admin_routes_need_the_admin_key(keyed):
    for method, path in [("GET", "/v1/admin/topology"), ("POST", "/is_scaling_elastic_ep"),
                         ("GET", "/v1/admin/scale/x")]:
        assert httpx.request(method, keyed.url + path).status_code == 401, path
        assert httpx.request(method, keyed.url + path, headers=bearer(API_KEY)).status_code == 401
    assert httpx.get(keyed.url + "/v1/admin/topology", headers=bearer(ADMIN_KEY)).status_code == 200
    reply = httpx.post(keyed.url + "/v1/admin/scale", json={"ranks": 2})
    assert reply.status_code == 401
    # With the key, the request reaches the route (this server cannot scale: 400 says so).
    reply = httpx.post(keyed.url + "/v1/admin/scale", json={"ranks": 2}, headers=bearer(ADMIN_KEY))
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "not_elastic"


def test_cors_only_for_allowed_origins(keyed):
    allowed = httpx.get(keyed.url + "/v1/models", headers={**bearer(API_KEY), "Origin": ORIGIN})
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.get(keyed.url + "/v1/models",
                      headers={**bearer(API_KEY), "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    reply = httpx.options(keyed.url + "/v1/completions", headers=preflight)
    assert reply.status_code == 204
    assert "POST" in reply.headers["access-control-allow-methods"]
    reply = httpx.options(keyed.url + "/v1/completions",
                          headers={**preflight, "Origin": "https://evil.example"})
    assert reply.status_code == 405
    assert "access-control-allow-origin" not in reply.headers


def test_no_cors_and_loopback_only_admin_by_default(server_default):
    reply = httpx.get(server_default.url + "/v1/models", headers={"Origin": ORIGIN})
    assert reply.status_code == 200
    assert "access-control-allow-origin" not in reply.headers
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    assert httpx.options(server_default.url + "/v1/admin/scale",
                         headers=preflight).status_code == 405
    # A loopback client reaches the admin routes...
    assert httpx.get(server_default.url + "/v1/admin/topology").status_code == 200
    # ...unless its Host names something else: a page whose DNS name was rebound to 127.0.0.1.
    status, _, reply = request(server_default.port,
                               b"GET /v1/admin/topology HTTP/1.1\r\nHost: evil.example:80\r\n\r\n")
    assert status == 403, reply
    status, _, _ = request(server_default.port, post(
        "/v1/admin/scale", b'{"ranks": 1}', {"Host": "rebound.example"}))
    assert status == 403
    for host in (b"localhost", b"127.0.0.1:8000", b"[::1]:8000"):
        status, _, _ = request(server_default.port,
                               b"GET /v1/admin/topology HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        assert status == 200, host


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine other than loopback (the route to a public address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_admin_routes_refuse_remote_clients_without_an_admin_key():
    address = non_loopback_address()
    if address is None:
        pytest.fail("this machine has no non-loopback IPv4 address to test remote clients from")
    with start_server("--host", "0.0.0.0") as server:
        remote = f"http://{address}:{server.port}"
        assert httpx.get(remote + "/health").status_code == 200
        assert httpx.get(remote + "/v1/models").status_code == 200
        reply = httpx.get(remote + "/v1/admin/topology")
        assert reply.status_code == 403
        assert "loopback" in reply.json()["error"]["message"]
        assert httpx.post(remote + "/v1/admin/scale", json={"ranks": 1}).status_code == 403
        assert httpx.post(remote + "/scale_elastic_ep",
                          json={"new_data_parallel_size": 1}).status_code == 403


def test_keys_from_the_environment_and_closed_metrics():
    environment = {"TIDAL_API_KEY": API_KEY}
    old = {k: os.environ.get(k) for k in environment}
    os.environ.update(environment)
    try:
        with start_server("--metrics-need-key") as server:
            assert httpx.get(server.url + "/v1/models").status_code == 401
            assert httpx.get(server.url + "/v1/models", headers=bearer(API_KEY)).status_code == 200
            assert httpx.get(server.url + "/metrics").status_code == 401
            assert httpx.get(server.url + "/metrics", headers=bearer(API_KEY)).status_code == 200
            assert httpx.get(server.url + "/health").status_code == 200
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def server_default():
    with start_server() as running:
        yield running
