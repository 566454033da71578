"""Fixtures of the API tests: the shared `tidal serve`, an OpenAI client and a raw HTTP client
bound to it, and the transformers reference outputs."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from support import MAX_MODEL_LEN, REFERENCE_FILE, start_server


@pytest.fixture(scope="session")
def server():
    """The server most tests share: the bundled fixture model with its defaults."""
    with start_server("--max-model-len", str(MAX_MODEL_LEN), "--trust-request-chat-template") as running:
        yield running


@pytest.fixture(scope="session")
def base_url(server) -> str:
    return server.url


@pytest.fixture(scope="session")
def client(server) -> openai.OpenAI:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def http(server) -> httpx.Client:
    """A raw HTTP client, for what the OpenAI client cannot express."""
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="session")
def reference() -> dict:
    """The transformers reference outputs of the fixture model (default variant)."""
    return json.loads(REFERENCE_FILE.read_text())["variants"]["default"]


