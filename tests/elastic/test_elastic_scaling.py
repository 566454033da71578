"""Elastic scaling while serving, on CPU rank processes (Gloo), through the official openai
client and the admin API.

Under continuous streaming traffic from 16 clients, each sequence of transitions (2->4->2,
2->3->2, 1->2->1, 3->1->3, and removing a middle rank) must:
  - finish every request with a normal finish reason and the reference's greedy tokens, also
    the requests handed from a leaving rank to a staying one mid-stream;
  - give the reference's greedy tokens for a fixed prompt set at every stage;
  - raise each staying or joining rank's warm_and_capture count by exactly one per transition
    and leave each leaving rank's as it was.
Plus: refusals (400, 409), the no-op, vLLM's aliases, `tidal scale`, rollback of a transition
whose joining rank is killed, and 20 up/down cycles without leaking the front's resources.
Every wait has a timeout, so a hang fails instead of blocking CI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from support import BINARY, MODEL, REFERENCE_FILE, extra, start_server, wait_for  # noqa: E402

TIMEOUT_S = 60
NUM_CLIENTS = 16
SCALE_TIMEOUT_S = 60


def reference_prompts() -> list[dict]:
    return json.loads(REFERENCE_FILE.read_text())["variants"]["default"]["prompts"]


PROMPTS = reference_prompts()


@dataclass
class Finished:
    prompt: int
    max_tokens: int
    token_ids: list[int]
    finish_reason: str | None


@dataclass
class Traffic:
    """NUM_CLIENTS threads, each streaming greedy completions of the reference prompts back to
    back until stopped. Every request either finishes (recorded) or fails (recorded)."""

    url: str
    num_impatient: int = 0  # extra clients that hang up mid-stream
    prompts: list[dict] = field(default_factory=lambda: PROMPTS)  # a fixture's reference prompts
    model: str = MODEL  # its served name
    finished: list[Finished] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client_loop(self, client_idx: int) -> None:
        client = openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0,
                               timeout=TIMEOUT_S)
        i = client_idx
        while not self.stop.is_set():
            prompt = i % len(self.prompts)
            max_tokens = 16 + (i % 3) * 8  # 16, 24 or 32: every reference prefix is known
            i += NUM_CLIENTS
            try:
                stream = client.completions.create(
                    model=self.model, prompt=self.prompts[prompt]["prompt_token_ids"],
                    max_tokens=max_tokens, temperature=0, stream=True,
                    extra_body={"ignore_eos": True, "return_token_ids": True})
                ids, finish = [], None
                for chunk in stream:
                    for choice in chunk.choices:
                        ids += extra(choice, "token_ids") or []
                        finish = choice.finish_reason or finish
                with self.lock:
                    self.finished.append(Finished(prompt, max_tokens, ids, finish))
            except Exception as error:  # noqa: BLE001: every failure is a test failure
                with self.lock:
                    self.failures.append(f"client {client_idx}: {type(error).__name__}: {error}")

    def impatient_loop(self, client_idx: int) -> None:
        """Streams and hangs up after a few tokens, again and again: aborts that cross
        transitions, some of them while their request is being handed to another rank."""
        client = openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0,
                               timeout=TIMEOUT_S)
        while not self.stop.is_set():
            try:
                stream = client.completions.create(
                    model=self.model,
                    prompt=self.prompts[client_idx % len(self.prompts)]["prompt_token_ids"],
                    max_tokens=32, temperature=0, stream=True, extra_body={"ignore_eos": True})
                for number, _ in enumerate(stream):
                    if number == 3:
                        break
                stream.close()
            except Exception as error:  # noqa: BLE001: every failure is a test failure
                with self.lock:
                    self.failures.append(f"impatient {client_idx}: {type(error).__name__}: {error}")

    def __enter__(self) -> "Traffic":
        for idx in range(NUM_CLIENTS):
            thread = threading.Thread(target=self.client_loop, args=(idx,), daemon=True)
            thread.start()
            self.threads.append(thread)
        for idx in range(self.num_impatient):
            thread = threading.Thread(target=self.impatient_loop, args=(idx,), daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=TIMEOUT_S)
        assert not any(thread.is_alive() for thread in self.threads), "a client hung"

    def count(self) -> int:
        with self.lock:
            return len(self.finished)

    def check(self) -> None:
        assert not self.failures, self.failures[:5]
        assert self.finished, "no request finished"
        for done in self.finished:
            assert done.finish_reason == "length", done
            expected = self.prompts[done.prompt]["greedy_token_ids"][: done.max_tokens]
            assert done.token_ids == expected, (
                f"prompt {done.prompt}: streamed tokens differ from the reference")


def topology(url: str) -> dict:
    response = httpx.get(url + "/v1/admin/topology", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def warm_counts(url: str) -> dict[int, int]:
    """member id -> warm_and_capture count, for the current ranks."""
    return {rank["member"]: rank["warm_and_capture"] for rank in topology(url)["ranks"]}


def await_operation(url: str, operation_id: str, what: str) -> dict:
    """Polls a scale operation until it is done or failed; returns its record."""

    def finished():
        operation = httpx.get(f"{url}/v1/admin/scale/{operation_id}", timeout=10).json()
        return operation if operation["phase"] in ("done", "failed") else None

    return wait_for(finished, SCALE_TIMEOUT_S, what=what)


def scale(url: str, ranks: int, **body) -> dict:
    """Scales to `ranks` through the admin API, waits for the outcome, returns the operation."""
    response = httpx.post(url + "/v1/admin/scale", json={"ranks": ranks, **body}, timeout=10)
    assert response.status_code in (200, 202), response.text
    return await_operation(url, response.json()["id"], f"scale to {ranks}")


def check_reference_prompts(url: str, prompts: list[dict] | None = None,
                            model: str = MODEL) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0,
                           timeout=TIMEOUT_S)
    for entry in PROMPTS if prompts is None else prompts:
        choice = client.completions.create(
            model=model, prompt=entry["prompt_token_ids"], max_tokens=32, temperature=0,
            extra_body={"ignore_eos": True, "return_token_ids": True}).choices[0]
        assert extra(choice, "token_ids") == entry["greedy_token_ids"]


def checked_transition(url: str, traffic: Traffic, ranks: int, **body) -> dict:
    """One transition under traffic, with every check of the issue."""
    before = warm_counts(url)
    served = traffic.count()
    operation = scale(url, ranks, **body)
    assert operation["result"] == "ok", operation
    after = {rank["member"]: rank["warm_and_capture"] for rank in operation["ranks_after"]}
    assert len(after) == ranks and topology(url)["num_ranks"] == ranks
    # Planned transitions lose no rank: leaving ranks exit cleanly and are not counted as failed.
    assert topology(url)["rank_failures"] == 0, topology(url)
    for member, count in after.items():
        expected = before[member] + 1 if member in before else 1
        assert count == expected, (
            f"member {member}: warm_and_capture {count}, expected {expected}", operation)
    for removed in operation["removed"]:
        assert removed["warm_and_capture"] == before[removed["member"]], operation
    assert {r["member"] for r in operation["removed"]} == set(before) - set(after)
    timings = operation["timings"]
    assert 0 < timings["pause_seconds"] <= timings["total_seconds"], timings
    # Traffic kept flowing through the transition.
    wait_for(lambda: traffic.count() > served + NUM_CLIENTS, TIMEOUT_S,
             what="requests finishing after the transition")
    check_reference_prompts(url, traffic.prompts, traffic.model)
    return operation


@pytest.mark.parametrize("start,sizes,slots", [
    (2, [4, 2], 4),
    (2, [3, 2], 4),
    (1, [2, 1], 8),
    (3, [1, 3], 8),
])
def test_transitions_under_streaming_traffic(start, sizes, slots):
    with start_server("--ranks", str(start), "--expert-slots", str(slots), "--elastic",
                      "--max-num-seqs", "16") as server:
        check_reference_prompts(server.url)
        with Traffic(server.url) as traffic:
            wait_for(lambda: traffic.count() >= NUM_CLIENTS, TIMEOUT_S, what="traffic")
            operations = [checked_transition(server.url, traffic, size) for size in sizes]
        traffic.check()
        assert operations[-1]["epoch_after"] == len(sizes)
        migrated = sum(op["requests_migrated"] for op in operations)
        shrinking = [op for op in operations if op["target_ranks"] < op["from_ranks"]]
        if shrinking:
            assert migrated > 0, "no request was in flight on a leaving rank: nothing was tested"
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
        assert f'tidal_scale_transitions_total{{result="ok"}} {len(sizes)}' in metrics
        assert f"tidal_ranks {sizes[-1]}" in metrics
        server.assert_alive()


def engine_idle(url: str) -> bool:
    """Every rank has no request running or waiting and no KV block in use."""
    metrics = httpx.get(url + "/metrics", timeout=10).text
    values = [float(line.split()[-1]) for line in metrics.splitlines()
              if line.startswith(("tidal_num_requests_running{", "tidal_num_requests_waiting{",
                                  "tidal_kv_cache_usage_perc{"))]
    return bool(values) and all(value == 0 for value in values)


def test_removing_a_middle_rank_hands_its_requests_over():
    with start_server("--ranks", "4", "--expert-slots", "4", "--max-num-seqs", "16") as server:
        with Traffic(server.url, num_impatient=4) as traffic:
            wait_for(lambda: traffic.count() >= NUM_CLIENTS, TIMEOUT_S, what="traffic")
            before = topology(server.url)["ranks"]
            operation = checked_transition(server.url, traffic, 3, remove_ranks=[1])
        traffic.check()
        assert operation["removed_ranks"] == [1]
        assert [r["member"] for r in operation["removed"]] == [before[1]["member"]]
        # Ranks 0, 2, 3 continue as 0, 1, 2.
        assert [r["member"] for r in operation["ranks_after"]] == [
            before[0]["member"], before[2]["member"], before[3]["member"]]
        assert operation["requests_migrated"] > 0, operation
        # Hung-up requests, handed over or not, leave nothing behind on any rank.
        wait_for(lambda: engine_idle(server.url), TIMEOUT_S, what="every rank idle")
        server.assert_alive()


def test_refusals_no_op_and_aliases():
    with start_server("--ranks", "2", "--expert-slots", "4", "--max-ranks", "4") as server:
        url = server.url
        for body, reason in [({"ranks": 0}, "cannot scale to 0 ranks"),
                             ({"ranks": 1}, "at least ceil(E/S)=2 ranks"),
                             ({"ranks": 5}, "4 devices"),
                             ({"ranks": "two"}, "'ranks' must be an integer"),
                             ({"ranks": 2, "remove_ranks": [0]}, "removes 0 ranks")]:
            response = httpx.post(url + "/v1/admin/scale", json=body, timeout=10)
            assert response.status_code == 400, (body, response.text)
            assert reason in response.json()["error"]["message"], (body, response.text)
        same = httpx.post(url + "/v1/admin/scale", json={"ranks": 2}, timeout=10)
        assert same.status_code == 200 and same.json()["result"] == "no-op", same.text
        assert httpx.get(url + "/v1/admin/scale/nope", timeout=10).status_code == 404

        # vLLM's aliases: a blocking scale, and the scaling flag.
        response = httpx.post(url + "/scale_elastic_ep", json={"new_data_parallel_size": 3},
                              timeout=SCALE_TIMEOUT_S)
        assert response.status_code == 200, response.text
        assert response.json()["operation"]["result"] == "ok"
        flag = httpx.post(url + "/is_scaling_elastic_ep", timeout=10).json()
        assert flag == {"is_scaling_elastic_ep": False}

        # The CLI.
        result = subprocess.run([str(BINARY), "scale", "2", "--server", url], capture_output=True,
                                timeout=SCALE_TIMEOUT_S, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        assert json.loads(result.stdout)["result"] == "ok"
        assert topology(url)["num_ranks"] == 2
        result = subprocess.run([str(BINARY), "scale", "9", "--server", url], capture_output=True,
                                timeout=SCALE_TIMEOUT_S, stdin=subprocess.DEVNULL)
        assert result.returncode == 1 and b"4 devices" in result.stderr
        check_reference_prompts(url)
        server.assert_alive()


def child_pids_with(server_pid: int, needle: str) -> list[int]:
    """Children of the server whose command line contains `needle`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
        if parent == server_pid and needle in command:
            found.append(int(entry.name))
    return found


def test_rollback_when_a_joining_rank_dies(monkeypatch):
    # Joining ranks stall before forming their communicator, so this test can kill one mid-prepare
    # (and so a second request finds the first still running).
    monkeypatch.setenv("TIDAL_TEST_JOIN_STALL_MS", "2000")
    with start_server("--ranks", "2", "--expert-slots", "4") as server:
        url = server.url
        before = topology(url)
        response = httpx.post(url + "/v1/admin/scale", json={"ranks": 3}, timeout=10)
        assert response.status_code == 202, response.text
        operation_id = response.json()["id"]
        busy = httpx.post(url + "/v1/admin/scale", json={"ranks": 4}, timeout=10)
        assert busy.status_code == 409, busy.text
        assert operation_id in busy.json()["error"]["message"]
        assert httpx.post(url + "/is_scaling_elastic_ep", timeout=10).json() == {
            "is_scaling_elastic_ep": True}

        joining = wait_for(lambda: child_pids_with(server.process.pid, "--rank 2"), 10,
                           what="the joining rank process")
        os.kill(joining[0], signal.SIGKILL)
        operation = await_operation(url, operation_id, "the rollback")
        assert operation["result"] == "failed", operation
        assert "exited before the commit" in operation["error"], operation
        after = topology(url)
        assert after["num_ranks"] == 2 and after["epoch"] == before["epoch"]
        assert [r["warm_and_capture"] for r in after["ranks"]] == [
            r["warm_and_capture"] for r in before["ranks"]]
        check_reference_prompts(url)  # still serving, at the old size

        retried = scale(url, 3)
        assert retried["result"] == "ok", retried
        assert topology(url)["num_ranks"] == 3
        check_reference_prompts(url)
        metrics = httpx.get(url + "/metrics", timeout=10).text
        assert 'tidal_scale_transitions_total{result="failed"} 1' in metrics
        server.assert_alive()


def front_resources(pid: int) -> tuple[int, int, int]:
    """(open file descriptors, threads, resident KiB) of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return fds, int(fields["Threads"]), int(fields["VmRSS"].split()[0])


def test_20_cycles_leak_nothing():
    # Bounds on the front's growth over 20 up/down cycles (40 transitions) after 2 warm-up
    # cycles: a leak of one descriptor, thread or 1 MiB per transition would exceed them.
    max_fd_growth, max_thread_growth, max_rss_growth_kib = 8, 4, 24 * 1024
    with start_server("--ranks", "2", "--expert-slots", "4") as server:
        pid = server.process.pid
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                               timeout=TIMEOUT_S)

        def cycle():
            for size in (3, 2):
                operation = scale(server.url, size)
                assert operation["result"] == "ok", operation
                choice = client.completions.create(
                    model=MODEL, prompt=PROMPTS[0]["prompt_token_ids"], max_tokens=8,
                    temperature=0, extra_body={"ignore_eos": True,
                                               "return_token_ids": True}).choices[0]
                assert extra(choice, "token_ids") == PROMPTS[0]["greedy_token_ids"][:8]

        for _ in range(2):
            cycle()
        time.sleep(0.5)
        start = front_resources(pid)
        for _ in range(20):
            cycle()
        time.sleep(0.5)
        end = front_resources(pid)
        growth = tuple(e - s for s, e in zip(start, end))
        print(f"front after 2 cycles {start}, after 22 {end}: growth {growth} "
              "(fds, threads, RSS KiB)")
        assert growth[0] <= max_fd_growth, (start, end)
        assert growth[1] <= max_thread_growth, (start, end)
        assert growth[2] <= max_rss_growth_kib, (start, end)
        assert topology(server.url)["epoch"] == 44
        assert len(child_pids_with(pid, "tidal")) == 2, "rank processes left behind"
        server.assert_alive()


def test_dummy_weights_are_the_same_on_every_rank_and_epoch():
    """--load-format dummy (the GPU benchmarks' weights): ranks that join later make the same
    values for the experts they hold, so greedy tokens match one in-process rank at every size."""
    config = str(Path(REFERENCE_FILE).parent / "tiny-qwen3-moe" / "config.json")
    dummy = ("--load-format", "dummy", "--config", config)
    prompt = ",".join(map(str, PROMPTS[0]["prompt_token_ids"]))
    result = subprocess.run([str(BINARY), "generate", "--json", "--prompt-token-ids", prompt,
                             "--max-tokens", "16", "--ignore-eos", *dummy], capture_output=True,
                            timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    expected = json.loads(result.stdout)["token_ids"]
    assert expected != PROMPTS[0]["greedy_token_ids"][:16], "dummy weights gave the real model's"
    with start_server("--ranks", "2", "--expert-slots", "4", *dummy) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                               timeout=TIMEOUT_S)
        for size in (2, 3, 4, 2):
            if size != topology(server.url)["num_ranks"]:
                assert scale(server.url, size)["result"] == "ok"
            choice = client.completions.create(
                model=MODEL, prompt=PROMPTS[0]["prompt_token_ids"], max_tokens=16, temperature=0,
                extra_body={"ignore_eos": True, "return_token_ids": True}).choices[0]
            assert extra(choice, "token_ids") == expected, f"at {size} ranks"
        server.assert_alive()


def waiting_for_external_ranks(server, operation_id: str) -> None:
    """Waits until the scale-up `operation_id` has its plan and waits for ranks started
    elsewhere: a rank that says hello before has no place to take and is refused."""
    wait_for(lambda: f"scale {operation_id}: waiting" in server.log(tail=1 << 20), TIMEOUT_S,
             what=f"{operation_id} to wait for ranks started elsewhere")


def serve_with_hand_started_rank(url: str, operation_id: str, rank: subprocess.Popen) -> None:
    """A scale-up to 3 that `rank` (started by hand as rank 2) completes: it serves the reference
    prompts, then a scale-down removes it and the process leaves cleanly."""
    try:
        operation = await_operation(url, operation_id, "the scale-up")
        assert operation["result"] == "ok", operation
        now = topology(url)
        assert now["num_ranks"] == 3 and now["ranks"][2]["pid"] == -1  # not one of ours
        assert now["rank_failures"] == 0
        check_reference_prompts(url)
        removed = scale(url, 2, remove_ranks=[2])
        assert removed["result"] == "ok", removed
        assert rank.wait(timeout=30) == 0, rank.stderr.read().decode(errors="replace")[-2000:]
    finally:
        if rank.poll() is None:
            rank.kill()
            rank.wait()


def test_scale_up_with_ranks_started_elsewhere(tmp_path):
    """--scale-spawn external (ranks on other hosts, started by a scheduler): the scale-up waits
    for `tidal rank --coordinator ADDRESS` started by hand with the server's rank secret, and
    rolls back when none comes."""
    secret_file = tmp_path / "rank-secret"
    with start_server("--ranks", "2", "--expert-slots", "4", "--scale-spawn", "external",
                      "--scale-prepare-timeout", "3",
                      "--rank-secret-file", str(secret_file)) as server:
        url = server.url
        coordinator = topology(url)["coordinator"]
        # Nobody starts a rank: the prepare times out and the server stays at 2.
        missed = scale(url, 3)
        assert missed["result"] == "failed", missed
        assert "timed out waiting for the joining ranks" in missed["error"], missed
        assert topology(url)["num_ranks"] == 2
        # Started by hand while the transition prepares: it joins as rank 2.
        response = httpx.post(url + "/v1/admin/scale", json={"ranks": 3}, timeout=10)
        assert response.status_code == 202, response.text
        operation_id = response.json()["id"]
        waiting_for_external_ranks(server, operation_id)
        rank = subprocess.Popen([str(BINARY), "rank", "--coordinator", coordinator,
                                 "--rank-secret-file", str(secret_file)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        serve_with_hand_started_rank(url, operation_id, rank)
        check_reference_prompts(url)
        server.assert_alive()


def test_shutdown_during_a_transition(monkeypatch):
    """SIGTERM while a scale-up prepares: the transition rolls back, the joining process is
    killed, and the server exits 0 within its shutdown bound (checked by stop_server)."""
    monkeypatch.setenv("TIDAL_TEST_JOIN_STALL_MS", "5000")
    with start_server("--ranks", "2", "--expert-slots", "4") as server:
        response = httpx.post(server.url + "/v1/admin/scale", json={"ranks": 3}, timeout=10)
        assert response.status_code == 202, response.text
        joining = wait_for(lambda: child_pids_with(server.process.pid, "--rank 2"), 10,
                           what="the joining rank process")
    # The server has exited (stop_server asserted it); so has the process it started.
    def gone(pid: int) -> bool:
        try:
            return "zombie" in Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return True

    wait_for(lambda: gone(joining[0]), 10, what="the joining rank to be gone")


def test_structured_output_is_handed_over_with_its_grammar():
    """Constrained requests in flight on a leaving rank continue on another under their grammar
    (replayed from the output so far there): every answer still validates, streamed or not."""
    schema = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 999},
              "minItems": 24, "maxItems": 24}
    with start_server("--ranks", "3", "--expert-slots", "4", "--max-num-seqs", "16") as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                               timeout=TIMEOUT_S)
        texts: dict[int, str] = {}
        errors: list[BaseException] = []
        started = threading.Semaphore(0)

        def constrained(seed: int) -> None:
            try:
                text = ""
                for chunk in client.completions.create(
                        model=MODEL, prompt="Numbers:", max_tokens=200, temperature=1.0,
                        seed=seed, stream=True, extra_body={"guided_json": schema}):
                    if not text:
                        started.release()
                    text += chunk.choices[0].text if chunk.choices else ""
                texts[seed] = text
            except BaseException as error:  # noqa: BLE001 (reported below)
                errors.append(error)
                started.release()

        threads = [threading.Thread(target=constrained, args=(seed,)) for seed in range(12)]
        for thread in threads:
            thread.start()
        for _ in threads:
            assert started.acquire(timeout=TIMEOUT_S)
        operation = scale(server.url, 2)
        for thread in threads:
            thread.join(timeout=TIMEOUT_S)
        assert not errors, errors
        assert operation["result"] == "ok", operation
        assert operation["requests_migrated"] > 0, operation
        for seed, text in texts.items():
            values = json.loads(text)
            assert len(values) == 24 and all(0 <= v <= 999 for v in values), (seed, text)
        server.assert_alive()
