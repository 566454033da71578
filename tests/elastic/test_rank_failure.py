"""Surviving a rank's death, on CPU rank processes (Gloo), through the official openai client.

Each case starts 3 ranks (8 experts in 4 slots each, so 2 survivors can hold them) under 16
streaming greedy clients plus 4 seeded sampling clients, then loses a rank: `kill -9` mid-decode
(shrink and replace), SIGSTOP (a hang, found by the heartbeat timeout), `kill -9` of a staying
rank during a scale's prepare and during its commit, and of a leaving rank during its hand-over.
For each: every request finishes normally with the tokens of an unfaulted run (greedy: the
reference; seeded: what the same seed gave before the fault), the server serves at the expected
size afterwards, and the longest gap between two tokens of any stream is printed. Then 20 random
kills in a row with `replace` (0 lost requests, bounded growth of the front's descriptors,
threads and memory), and `kill -9` of the front (its ranks gone within 2 s). Every wait has a
timeout, so a hang fails instead of blocking CI."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from support import BINARY, MODEL, extra, free_port, start_server, wait_for  # noqa: E402
from test_elastic_scaling import (PROMPTS, await_operation, check_reference_prompts,  # noqa: E402
                                  front_resources, topology)

TIMEOUT_S = 60
NUM_CLIENTS = 16
NUM_SEEDED = 4
RECOVERY_TIMEOUT_S = 60
SERVER_ARGS = ("--ranks", "3", "--expert-slots", "4", "--max-num-seqs", "16",
               "--rank-timeout", "2")


def seeded_request(client: openai.OpenAI, idx: int, stream: bool):
    return client.completions.create(
        model=MODEL, prompt=PROMPTS[idx % len(PROMPTS)]["prompt_token_ids"], max_tokens=24,
        temperature=0.8, top_p=0.95, seed=1000 + idx, stream=stream,
        extra_body={"ignore_eos": True, "return_token_ids": True})


@dataclass
class FaultTraffic:
    """Greedy and seeded streaming clients, back to back until stopped. Records every finished
    request, every failure, and the longest time between two token-carrying chunks of a stream."""

    url: str
    seeded_expected: dict[int, list[int]]
    finished: int = 0
    failures: list[str] = field(default_factory=list)
    longest_gap_s: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stream(self, make_stream, check) -> None:
        try:
            stream = make_stream()
            ids, finish, last, gap = [], None, None, 0.0
            for chunk in stream:
                for choice in chunk.choices:
                    new = extra(choice, "token_ids") or []
                    if new:
                        now = time.monotonic()
                        if last is not None:
                            gap = max(gap, now - last)
                        last = now
                    ids += new
                    finish = choice.finish_reason or finish
            problem = check(ids, finish)
            with self.lock:
                self.longest_gap_s = max(self.longest_gap_s, gap)
                if problem:
                    self.failures.append(problem)
                else:
                    self.finished += 1
        except Exception as error:  # noqa: BLE001: every failure is a test failure
            with self.lock:
                self.failures.append(f"{type(error).__name__}: {error}")

    def greedy_loop(self, client_idx: int) -> None:
        client = openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0,
                               timeout=TIMEOUT_S)
        i = client_idx
        while not self.stop.is_set():
            prompt, max_tokens = i % len(PROMPTS), 16 + (i % 3) * 8
            i += NUM_CLIENTS

            def check(ids, finish, prompt=prompt, max_tokens=max_tokens):
                expected = PROMPTS[prompt]["greedy_token_ids"][:max_tokens]
                if finish != "length":
                    return f"greedy prompt {prompt}: finish_reason {finish!r}"
                if ids != expected:
                    return f"greedy prompt {prompt}: {ids} != reference {expected}"
                return None

            self.stream(lambda prompt=prompt, max_tokens=max_tokens: client.completions.create(
                model=MODEL, prompt=PROMPTS[prompt]["prompt_token_ids"], max_tokens=max_tokens,
                temperature=0, stream=True,
                extra_body={"ignore_eos": True, "return_token_ids": True}), check)

    def seeded_loop(self, idx: int) -> None:
        client = openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0,
                               timeout=TIMEOUT_S)

        def check(ids, finish):
            if finish != "length":
                return f"seeded {idx}: finish_reason {finish!r}"
            if ids != self.seeded_expected[idx]:
                return f"seeded {idx}: {ids} != unfaulted {self.seeded_expected[idx]}"
            return None

        while not self.stop.is_set():
            self.stream(lambda: seeded_request(client, idx, stream=True), check)

    def __enter__(self) -> "FaultTraffic":
        loops = [(self.greedy_loop, i) for i in range(NUM_CLIENTS)]
        loops += [(self.seeded_loop, i) for i in range(NUM_SEEDED)]
        for target, idx in loops:
            thread = threading.Thread(target=target, args=(idx,), daemon=True)
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
            return self.finished

    def check(self) -> None:
        assert not self.failures, self.failures[:5]
        assert self.finished > 0, "no request finished"


def seeded_references(url: str) -> dict[int, list[int]]:
    """What each seeded client's request gives on the unfaulted server (non-streaming)."""
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0,
                           timeout=TIMEOUT_S)
    return {idx: extra(seeded_request(client, idx, stream=False).choices[0], "token_ids")
            for idx in range(NUM_SEEDED)}


def metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def recovered(url: str, failures: int, ranks: int) -> dict | None:
    """The topology once `failures` failures are recovered from and `ranks` ranks serve."""
    now = topology(url)
    idle = now["scaling"] is None and not now["recovering"]
    return now if idle and now["rank_failures"] >= failures and now["num_ranks"] == ranks else None


def rank_pid(url: str, rank: int) -> int:
    pid = topology(url)["ranks"][rank]["pid"]
    assert pid > 0, "not a local rank"
    return pid


def process_gone(pid: int) -> bool:
    try:
        return "zombie" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


class TestGate:
    """A rank's test hold at a chosen point ("gate:PATH", see stall_for_tests in rank_worker.cpp):
    the rank announces its arrival and waits until the gate opens, so a fault lands exactly
    there, however slow the machine."""

    __test__ = False  # not a test class, despite its name

    def __init__(self, path: Path):
        self.path = path
        self.setting = f"gate:{path}"

    def wait_for_arrival(self, pid: int | None = None) -> None:
        pattern = f"{self.path.name}.arrived.{pid if pid is not None else '*'}"
        wait_for(lambda: any(self.path.parent.glob(pattern)), TIMEOUT_S,
                 interval_s=0.01, what=f"a rank at {self.path.name}")

    def open(self) -> None:
        self.path.touch()


def faulted_run(fault, *extra_args: str, env: dict[str, str] | None = None,
                final_ranks: int = 3, failures: int = 1, base_args=SERVER_ARGS) -> dict:
    """Starts 3 ranks under traffic, applies `fault(url)`, waits for the recovery, checks.
    Returns the topology after the recovery."""
    saved = {key: os.environ.get(key) for key in (env or {})}
    os.environ.update(env or {})
    try:
        with start_server(*base_args, *extra_args) as server:
            url = server.url
            check_reference_prompts(url)
            traffic = FaultTraffic(url, seeded_references(url))
            with traffic:
                wait_for(lambda: traffic.count() >= NUM_CLIENTS, TIMEOUT_S, what="traffic")
                fault(url)
                after = wait_for(lambda: recovered(url, failures, final_ranks),
                                 RECOVERY_TIMEOUT_S, what=f"recovery to {final_ranks} ranks")
                served = traffic.count()
                wait_for(lambda: traffic.count() > served + NUM_CLIENTS, TIMEOUT_S,
                         what="requests finishing after the recovery")
            print(f"longest gap between two tokens of a stream: {traffic.longest_gap_s:.3f} s; "
                  f"{traffic.count()} requests finished")
            traffic.check()
            assert httpx.get(url + "/health", timeout=10).status_code == 200
            assert metric(url, "tidal_rank_failures_total") >= failures
            assert metric(url, 'tidal_recoveries_total{result="ok"}') >= 1
            assert metric(url, "tidal_requests_recovered_total") > 0
            check_reference_prompts(url)
            server.assert_alive()
            return after
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.mark.parametrize("policy,final_ranks", [("shrink", 2), ("replace", 3)])
def test_kill_mid_decode(policy, final_ranks):
    def fault(url):
        os.kill(rank_pid(url, 1), signal.SIGKILL)

    faulted_run(fault, "--on-rank-failure", policy, final_ranks=final_ranks)


def test_without_spare_slots_a_replacement_joins_the_recovery():
    """3 ranks of 3 slots for 8 experts: 2 survivors cannot hold them, so with `replace` a fresh
    rank joins the survivors' epoch in the same recovery (loading its slots as it joins)."""
    members = []

    def fault(url):
        members.extend(rank["member"] for rank in topology(url)["ranks"])
        os.kill(rank_pid(url, 0), signal.SIGKILL)

    after = faulted_run(fault, base_args=("--ranks", "3", "--max-num-seqs", "16",
                                          "--rank-timeout", "2"), final_ranks=3)
    now = [rank["member"] for rank in after["ranks"]]
    assert now[:2] == members[1:] and now[2] not in members, (members, now)
    assert after["placement"]["min_replicas"] == 1


def test_an_unrecoverable_failure_is_reported_not_hidden():
    """2 ranks of 4 slots for 8 experts with `shrink`: one survivor cannot hold them. Streams in
    flight end with an error event (never a silent end), new requests get 503, /health 503."""
    with start_server("--ranks", "2", "--expert-slots", "4", "--on-rank-failure", "shrink",
                      "--max-num-seqs", "16") as server:
        url = server.url
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0,
                               timeout=TIMEOUT_S)
        outcomes: list[str] = []
        lock = threading.Lock()

        def stream(idx: int) -> None:
            try:
                finish = None
                for chunk in client.completions.create(
                        model=MODEL, prompt=PROMPTS[idx % len(PROMPTS)]["prompt_token_ids"],
                        max_tokens=1500, temperature=0, stream=True,
                        extra_body={"ignore_eos": True}):
                    for choice in chunk.choices:
                        finish = choice.finish_reason or finish
                outcome = f"ended with finish_reason {finish!r}"
            except openai.APIError as error:
                outcome = f"error: {error}"
            with lock:
                outcomes.append(outcome)

        threads = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(8)]
        for thread in threads:
            thread.start()
        wait_for(lambda: metric(url, "tidal_generation_tokens_total") > 64, TIMEOUT_S,
                 what="streams under way")
        os.kill(rank_pid(url, 1), signal.SIGKILL)
        for thread in threads:
            thread.join(timeout=TIMEOUT_S)
        assert len(outcomes) == 8, outcomes
        for outcome in outcomes:
            assert outcome.startswith("error:") and "cannot recover" in outcome, outcomes
        assert httpx.get(url + "/health", timeout=10).status_code == 503
        response = httpx.post(url + "/v1/completions", json={
            "model": MODEL, "prompt": "The tide", "max_tokens": 4}, timeout=10)
        assert response.status_code == 503, response.text
        assert "cannot recover" in response.json()["error"]["message"], response.text
        operation = httpx.get(url + "/v1/admin/scale/recover-1", timeout=10).json()
        assert operation["kind"] == "recover" and operation["result"] == "failed", operation
        assert metric(url, 'tidal_recoveries_total{result="failed"}') == 1
        server.assert_alive()


def test_a_stopped_rank_is_declared_failed_and_killed():
    stopped = []

    def fault(url):
        stopped.append(rank_pid(url, 2))
        os.kill(stopped[0], signal.SIGSTOP)

    faulted_run(fault, "--on-rank-failure", "shrink", final_ranks=2)
    assert process_gone(stopped[0]), "the stopped rank was not killed"


def test_kill_during_a_scale_prepare(tmp_path):
    gate = TestGate(tmp_path / "join")

    def fault(url):
        response = httpx.post(url + "/v1/admin/scale", json={"ranks": 4}, timeout=10)
        assert response.status_code == 202, response.text
        gate.wait_for_arrival()  # the joining rank holds before it forms its communicator
        os.kill(rank_pid(url, 1), signal.SIGKILL)
        gate.open()
        operation = await_operation(url, response.json()["id"], "the interrupted scale")
        assert operation["result"] == "failed", operation

    faulted_run(fault, env={"TIDAL_TEST_JOIN_STALL_MS": gate.setting}, final_ranks=3)


def test_kill_a_staying_rank_during_the_commit(tmp_path):
    gate = TestGate(tmp_path / "commit")

    def fault(url):
        response = httpx.post(url + "/v1/admin/scale", json={"ranks": 4}, timeout=10)
        assert response.status_code == 202, response.text
        operation_id = response.json()["id"]
        victim = rank_pid(url, 1)
        gate.wait_for_arrival(victim)  # every old rank holds at the start of its commit
        os.kill(victim, signal.SIGKILL)
        gate.open()
        operation = await_operation(url, operation_id, "the interrupted commit")
        assert operation["result"] == "failed" and "recovering" in operation["error"], operation

    # Survivors: old ranks 0 and 2 and the joining rank: 3 ranks, the size asked for before.
    faulted_run(fault, env={"TIDAL_TEST_COMMIT_STALL_MS": gate.setting}, final_ranks=3)


def test_kill_a_leaving_rank_during_its_handover(tmp_path):
    gate = TestGate(tmp_path / "handoff")

    def fault(url):
        leaving = rank_pid(url, 1)
        response = httpx.post(url + "/v1/admin/scale", json={"ranks": 2, "remove_ranks": [1]},
                              timeout=10)
        assert response.status_code == 202, response.text
        operation_id = response.json()["id"]
        gate.wait_for_arrival(leaving)  # its weights have gone out; it holds before handing back
        os.kill(leaving, signal.SIGKILL)
        gate.open()
        operation = await_operation(url, operation_id, "the scale-down")
        assert operation["result"] == "ok", operation
        assert operation["requests_migrated"] > 0, operation

    # The staying ranks never noticed: no recovery, the requests continue from the ledger.
    saved = os.environ.get("TIDAL_TEST_HANDOFF_STALL_MS")
    os.environ["TIDAL_TEST_HANDOFF_STALL_MS"] = gate.setting
    try:
        with start_server(*SERVER_ARGS) as server:
            traffic = FaultTraffic(server.url, seeded_references(server.url))
            with traffic:
                wait_for(lambda: traffic.count() >= NUM_CLIENTS, TIMEOUT_S, what="traffic")
                fault(server.url)
                served = traffic.count()
                wait_for(lambda: traffic.count() > served + NUM_CLIENTS, TIMEOUT_S,
                         what="requests finishing after the hand-over")
            print(f"longest gap between two tokens of a stream: {traffic.longest_gap_s:.3f} s")
            traffic.check()
            assert topology(server.url)["num_ranks"] == 2
            assert metric(server.url, "tidal_rank_failures_total") == 1
            check_reference_prompts(server.url)
            server.assert_alive()
    finally:
        if saved is None:
            os.environ.pop("TIDAL_TEST_HANDOFF_STALL_MS", None)
        else:
            os.environ["TIDAL_TEST_HANDOFF_STALL_MS"] = saved


def test_20_random_kills_lose_nothing():
    # Bounds on the front's growth over 20 kills and replacements after 2 warm-up ones: a leak
    # of a descriptor, a thread or 1 MiB per failure would exceed them.
    max_fd_growth, max_thread_growth, max_rss_growth_kib = 8, 4, 24 * 1024
    rng = random.Random(7)
    with start_server(*SERVER_ARGS) as server:
        url, pid = server.url, server.process.pid
        traffic = FaultTraffic(url, seeded_references(url))
        with traffic:
            wait_for(lambda: traffic.count() >= NUM_CLIENTS, TIMEOUT_S, what="traffic")
            start = None
            for kill in range(22):
                if kill == 2:
                    time.sleep(0.5)
                    start = front_resources(pid)
                os.kill(rank_pid(url, rng.randrange(3)), signal.SIGKILL)
                wait_for(lambda kill=kill: recovered(url, kill + 1, 3), RECOVERY_TIMEOUT_S,
                         what=f"recovery from kill {kill + 1}")
                served = traffic.count()
                wait_for(lambda: traffic.count() > served + 4, TIMEOUT_S,
                         what=f"requests finishing after kill {kill + 1}")
            time.sleep(0.5)
            end = front_resources(pid)
        print(f"after 22 kills: {traffic.count()} requests finished, longest gap "
              f"{traffic.longest_gap_s:.3f} s; front after 2 kills {start}, after 22 {end}")
        traffic.check()
        growth = tuple(e - s for s, e in zip(start, end))
        assert growth[0] <= max_fd_growth, (start, end)
        assert growth[1] <= max_thread_growth, (start, end)
        assert growth[2] <= max_rss_growth_kib, (start, end)
        assert metric(url, "tidal_rank_failures_total") == 22
        assert metric(url, 'tidal_recoveries_total{result="ok"}') == 22
        check_reference_prompts(url)
        server.assert_alive()


def test_a_refused_first_rendezvous_is_retried(monkeypatch):
    """A connection refused while the first communicator forms (rank 0's, made to fail by a
    test knob) starts every rank again at a fresh epoch, once, instead of failing the start."""
    monkeypatch.setenv("TIDAL_TEST_REFUSE_RENDEZVOUS_EPOCH", "0")
    with start_server("--ranks", "2", "--expert-slots", "4") as server:
        assert "starting them again at a fresh epoch" in server.log(100_000), server.log()
        assert topology(server.url)["epoch"] == 1
        check_reference_prompts(server.url)
        server.assert_alive()


def test_killing_the_front_takes_its_ranks_within_2_s():
    port = free_port()
    with tempfile.TemporaryFile() as log:
        front = subprocess.Popen([str(BINARY), "serve", "--host", "127.0.0.1", "--port", str(port),
                                  *SERVER_ARGS], stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"

            def healthy():
                try:
                    return httpx.get(url + "/health", timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(healthy, 120, what="the server")
            # A scale-up forks its rank from a transition thread that then ends: the case where
            # PR_SET_PDEATHSIG alone would not fire.
            response = httpx.post(url + "/v1/admin/scale", json={"ranks": 4}, timeout=10)
            assert response.status_code == 202, response.text
            assert await_operation(url, response.json()["id"], "scale-up")["result"] == "ok"
            pids = [rank["pid"] for rank in topology(url)["ranks"]]
            assert len(pids) == 4 and all(p > 0 for p in pids)
            front.kill()
            front.wait(timeout=10)
            killed_at = time.monotonic()
            wait_for(lambda: all(process_gone(p) for p in pids), 2.0, interval_s=0.02,
                     what="every rank process gone after the front's death")
            print(f"ranks gone {time.monotonic() - killed_at:.3f} s after the front was killed")
        finally:
            if front.poll() is None:
                front.kill()
                front.wait()
