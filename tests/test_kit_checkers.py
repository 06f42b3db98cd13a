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
        assert module.ask(client, "http://engine", case, stream=False) == ("{}", "stop")
        module.ask(client, "http://engine", case, stream=False)
    assert asked == ["/models/its-own-name"] * 2

    def unlisted(request: httpx.Request) -> httpx.Response:  # a server without /v1/models gets the kit's name
        if request.url.path == "/v1/models":
            return httpx.Response(404)
        asked.append(json.loads(request.content)["model"])
        return httpx.Response(200, json={"choices": [{"message": {"content": "{}"}, "finish_reason": "stop"}]})
    with httpx.Client(transport=httpx.MockTransport(unlisted)) as client:
        module.ask(client, "http://bare", case, stream=False)
    assert asked[-1] == module.MODEL_NAME == "smollm2-135m-instruct"
