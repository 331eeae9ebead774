"""Injected faults a test can ask for: a slow answer is carried out at once and only its
answer waits (outside the simulator's lock, so other calls go on), and a fault can be aimed
at one method."""

from __future__ import annotations

import threading
import time
from typing import Any

import requests

from bitbucket_sim.testing import SimProcess

AUTH = {"Authorization": "Bearer t"}
DELAY = 10.0


def test_a_slow_answer_is_carried_out_at_once_and_holds_up_no_other_call() -> None:
    with SimProcess(repos=3, seed=5, access_token="t") as sim:
        repo = sim.repositories()[0]
        pipelines = f"{sim.api_url}/repositories/acme/{repo['slug']}/pipelines/"

        def count() -> int:
            answer = requests.get(pipelines, params={"pagelen": 100}, headers=AUTH, timeout=30)
            return len(answer.json()["values"])

        existing = count()
        fault = {"delay_seconds": DELAY, "method": "POST", "path_contains": "/pipelines"}
        assert sim.admin("POST", "faults", json=fault).status_code == 201
        answers: list[Any] = []
        body = {"target": {"type": "pipeline_ref_target", "ref_type": "branch"}}
        body["target"]["ref_name"] = repo["mainbranch"]
        post = threading.Thread(
            target=lambda: answers.append(
                requests.post(pipelines, json=body, headers=AUTH, timeout=60)
            )
        )
        post.start()
        deadline, seen_while_waiting = time.monotonic() + DELAY, False
        while time.monotonic() < deadline and not seen_while_waiting:
            # GETs are not delayed (the fault names POST) and are not held up by the POST.
            seen_while_waiting = count() == existing + 1 and post.is_alive()
            time.sleep(0.1)
        post.join(timeout=60)
        assert seen_while_waiting
        assert answers and answers[0].status_code == 201
        assert count() == existing + 1
