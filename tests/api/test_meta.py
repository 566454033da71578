"""/v1/models, /health, /metrics, the startup log line, and --served-model-name."""

from __future__ import annotations

import signal
import time

import httpx
import openai

from support import MAX_MODEL_LEN, MODEL, SHUTDOWN_TIMEOUT_S, read_metrics, start_server


def test_startup_log_names_model_and_address(server):
    assert f"serving '{MODEL}' at http://127.0.0.1:{server.port}" in server.log()


def test_models_lists_the_served_name(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    model = models.data[0]
    assert model.object == "model"
    assert model.owned_by
    assert isinstance(model.created, int)
    assert (model.model_extra or {}).get("max_model_len") == MAX_MODEL_LEN


def test_health(http):
    response = http.get("/health")
    assert response.status_code == 200


def test_metrics_move(server, client):
    before = read_metrics(server.url)
    for name in ("tidal_prompt_tokens_total", "tidal_generation_tokens_total",
                 "tidal_time_to_first_token_seconds_count", "tidal_inter_token_latency_seconds_count",
                 'tidal_num_requests_running{rank="0"}', 'tidal_num_requests_waiting{rank="0"}',
                 'tidal_kv_cache_usage_perc{rank="0"}', 'tidal_time_to_first_token_seconds_bucket{le="+Inf"}'):
        assert name in before, name
    response = client.completions.create(model=MODEL, prompt="The lighthouse keeper", max_tokens=6,
                                         extra_body={"ignore_eos": True})
    chat = client.chat.completions.create(model=MODEL, max_tokens=3, extra_body={"ignore_eos": True},
                                          messages=[{"role": "user", "content": "hi"}])
    after = read_metrics(server.url)

    def delta(name):
        return after.get(name, 0) - before.get(name, 0)

    assert delta("tidal_prompt_tokens_total") == response.usage.prompt_tokens + chat.usage.prompt_tokens
    assert delta("tidal_generation_tokens_total") == 9
    assert delta("tidal_time_to_first_token_seconds_count") == 2
    assert delta('tidal_time_to_first_token_seconds_bucket{le="+Inf"}') == 2
    assert delta("tidal_time_to_first_token_seconds_sum") > 0
    assert delta("tidal_inter_token_latency_seconds_count") == 5 + 2
    assert delta('tidal_request_finished_total{finish_reason="length"}') == 2
    assert delta('tidal_http_requests_total{status="200"}') >= 3  # two requests and /metrics
    assert delta("tidal_engine_steps_total{rank=\"0\"}") > 0
    # The step's wall time by phase moves where that phase ran: a lone rank agrees with nobody.
    for phase in ("schedule", "forward", "outputs"):
        assert delta(f'tidal_step_seconds_total{{rank="0",phase="{phase}"}}') > 0, phase
    assert delta('tidal_step_seconds_total{rank="0",phase="agree"}') == 0
    # Histogram buckets are cumulative.
    buckets = [v for k, v in after.items() if k.startswith("tidal_time_to_first_token_seconds_bucket")]
    assert buckets == sorted(buckets)
    assert after['tidal_num_requests_running{rank="0"}'] == 0
    assert after['tidal_kv_cache_usage_perc{rank="0"}'] == 0


def test_served_model_name():
    with start_server("--served-model-name", "my-model", "--generation-config", "none") as other:
        with openai.OpenAI(base_url=other.url + "/v1", api_key="unused", max_retries=0, timeout=30) as c:
            assert [m.id for m in c.models.list().data] == ["my-model"]
            response = c.completions.create(model="my-model", prompt="The", max_tokens=2)
            assert response.model == "my-model"
            try:
                c.completions.create(model=MODEL, prompt="The", max_tokens=2)
            except openai.NotFoundError as error:
                assert error.code == "model_not_found"
            else:
                raise AssertionError("the fixture's own name was served under --served-model-name")


def test_sigterm_with_an_open_stream_exits_cleanly():
    """SIGTERM while a stream is open: the server finishes (or cuts) the stream and exits 0
    within the shutdown timeout instead of hanging on the open connection."""
    with start_server() as other:
        body = {"model": MODEL, "prompt": "The", "max_tokens": 1000, "n": 4, "ignore_eos": True,
                "stream": True}
        with httpx.Client(base_url=other.url, timeout=30) as raw:
            with raw.stream("POST", "/v1/completions", json=body) as response:
                lines = response.iter_lines()
                for _, line in zip(range(5), lines):
                    assert line != "data: [DONE]"
                signalled = time.monotonic()
                other.process.send_signal(signal.SIGTERM)
                try:
                    for _ in lines:
                        pass
                except httpx.HTTPError:
                    pass  # a cut stream is fine; a hang is not
        assert other.process.wait(timeout=SHUTDOWN_TIMEOUT_S) == 0, other.log()
        assert time.monotonic() - signalled < SHUTDOWN_TIMEOUT_S
        assert "shutting down" in other.log()
