"""What the SmolLM2 scenario kits' checkers send: the model name the server lists, so a stock engine that
answers only to its own name (vLLM answers 404 to any other) is checked on its answers, not refused."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]


def checker(kit: str):
    spec = importlib.util.spec_from_file_location(f"{kit}_accuracy", REPO / "examples" / "targets" / kit / "checks" /
                                                  "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def only_its_own_name(asked: list[str]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "/models/its-own-name"}]})
        model = json.loads(request.content)["model"]
        asked.append(model)
        if model != "/models/its-own-name":
            return httpx.Response(404, json={"error": {"message": f"The model `{model}` does not exist."}})
        return httpx.Response(200, json={"choices": [{"message": {"content": "{}"}, "finish_reason": "stop"}]})
    return httpx.MockTransport(handle)


@pytest.mark.parametrize("kit", ["smollm2-code-edit-cpu", "smollm2-json-cpu"])
def test_checker_asks_for_the_model_the_server_lists(kit: str) -> None:
    module, asked = checker(kit), []
    case = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    with httpx.Client(transport=only_its_own_name(asked)) as client:
        served = module.served_model(client, "http://engine")
        assert module.ask(client, "http://engine", case, stream=False, model=served) == ("{}", "stop")
        module.ask(client, "http://engine", case, stream=False, model=served)
    assert asked == ["/models/its-own-name"] * 2

    def unlisted(request: httpx.Request) -> httpx.Response:  # a server without /v1/models gets the kit's name
        if request.url.path == "/v1/models":
            return httpx.Response(404)
        asked.append(json.loads(request.content)["model"])
        return httpx.Response(200, json={"choices": [{"message": {"content": "{}"}, "finish_reason": "stop"}]})
    with httpx.Client(transport=httpx.MockTransport(unlisted)) as client:
        module.ask(client, "http://bare", case, stream=False, model=module.served_model(client, "http://bare"))
    assert asked[-1] == module.MODEL_NAME == "smollm2-135m-instruct"


def sse(events: list[dict], done: bool) -> httpx.MockTransport:
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + ("data: [DONE]\n\n" if done else "")

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m"}]})
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body.encode())
    return httpx.MockTransport(handle)


def chunk(text: str, finish: str | None) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": text}, "text": text, "finish_reason": finish}]}


def ask_of(kit: str):
    """Each kit checker's ``ask`` as ``ask(client, url, case)`` for one streamed chat case."""
    path = (REPO / "src" / "vibeserve" / "target" / "templates" / "llm-chat" if kit == "llm-chat template"
            else REPO / "examples" / "targets" / kit)
    spec = importlib.util.spec_from_file_location(f"{kit}_checker".replace(" ", "_"), path / "checks" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if kit in ("hybrid-prefix-cpu", "llm-chat template"):
        return module, lambda client, url, case: module.ask(client, url, "m", case, True)
    return module, lambda client, url, case: module.ask(client, url, case, True)


@pytest.mark.parametrize("kit", ["smollm2-chat-cpu", "smollm2-code-edit-cpu", "smollm2-json-cpu", "hybrid-prefix-cpu",
                                 "tiny-llama", "llm-chat template"])
def test_a_stream_is_complete_at_done_or_at_a_finish_reason(kit: str) -> None:
    # `transformers serve` closes its stream after the chunk with the finish_reason, without data: [DONE];
    # a stream that closes before either is cut short, and every checker says so.
    module, ask = ask_of(kit)
    case = {"kind": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    for done in (True, False):
        with httpx.Client(transport=sse([chunk("Hel", None), chunk("lo", "length")], done)) as client:
            assert ask(client, "http://s", case) == ("Hello", "length")
    with httpx.Client(transport=sse([chunk("Hel", None)], done=False)) as client, \
            pytest.raises(module.ServerError, match="finish_reason or data: \\[DONE\\]"):
        ask(client, "http://s", case)
