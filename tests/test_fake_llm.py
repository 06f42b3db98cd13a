"""The fake model server, end to end through the official OpenAI and Anthropic SDKs on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from pydantic import ValidationError

from vibeserve.testing.fake_llm import MALFORMED_REPLY, FakeLLM, Script, ToolCall, Turn, Usage

FN = {"type": "object", "properties": {"cmd": {"type": "string"}}}


def oai(llm: FakeLLM) -> openai.OpenAI:
    return openai.OpenAI(base_url=llm.openai_base_url, api_key="dummy", max_retries=0, timeout=10)


def claude(llm: FakeLLM) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=llm.anthropic_base_url, api_key="dummy", max_retries=0, timeout=10)


def claude_stream(
    llm: FakeLLM, prompt: str = "go", tools: list[dict] | None = None
) -> anthropic.types.Message:
    kwargs = {"tools": tools} if tools else {}
    messages = [{"role": "user", "content": prompt}]
    with claude(llm).messages.stream(
        model="fake-claude", max_tokens=100, messages=messages, **kwargs
    ) as stream:
        return stream.get_final_message()


def test_responses_stream_text_tool_calls_mcp_namespace_and_usage() -> None:
    turn = Turn(
        text="Working on it.",
        tool_calls=[
            ToolCall(name="exec_command", arguments={"cmd": "echo hi > a.txt"}),
            ToolCall(name="apply_patch", arguments="*** Begin Patch\n*** End Patch\n"),
            ToolCall(name="mcp__adder__add", arguments={"a": 40, "b": 2}),
        ],
        usage=Usage(input_tokens=1200, output_tokens=40, cached_tokens=1000),
    )
    tools = [
        {"type": "function", "name": "exec_command", "parameters": FN},
        {"type": "custom", "name": "apply_patch"},
        {
            "type": "namespace",
            "name": "mcp__adder",
            "tools": [{"type": "function", "name": "add", "parameters": FN}],
        },
    ]
    with FakeLLM([turn]) as llm:
        with oai(llm).responses.stream(model="fake-model", input="do it", tools=tools) as stream:
            types = [event.type for event in stream]
            final = stream.get_final_response()
        assert llm.requests[0].path == "/v1/responses" and llm.requests[0].turn == 0
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert types.index("response.output_item.added") < types.index("response.output_text.delta")
    message, shell, patch, mcp = final.output
    assert message.content[0].text == "Working on it." == final.output_text
    assert (shell.type, shell.name, json.loads(shell.arguments)) == (
        "function_call",
        "exec_command",
        {"cmd": "echo hi > a.txt"},
    )
    assert (patch.type, patch.name, patch.input) == (
        "custom_tool_call",
        "apply_patch",
        "*** Begin Patch\n*** End Patch\n",
    )
    assert (mcp.type, mcp.namespace, mcp.name) == (
        "function_call",
        "mcp__adder",
        "add",
    )  # Codex refuses a bare name
    assert len({shell.call_id, patch.call_id, mcp.call_id}) == 3
    assert final.usage.input_tokens == 1200 and final.usage.output_tokens == 40
    assert final.usage.input_tokens_details.cached_tokens == 1000


def test_responses_structured_reply_is_the_final_message_text() -> None:
    text_format = {
        "format": {"type": "json_schema", "name": "codex_output_schema", "strict": True, "schema": FN}
    }
    with FakeLLM([Turn(reply={"cmd": "done"}), Turn(malformed=True)]) as llm:
        final = oai(llm).responses.create(model="fake-model", input="finish", text=text_format)
        stream = oai(llm).responses.create(model="fake-model", input="finish", stream=True)
        done = [e for e in stream if e.type == "response.completed"][0].response
    assert json.loads(final.output_text) == {"cmd": "done"}
    assert json.loads(done.output_text) == MALFORMED_REPLY


def test_chat_completions_tool_calls_without_streaming() -> None:
    turn = Turn(
        text="Reading first.",
        tool_calls=[
            ToolCall(name="read_file", arguments={"path": "a.txt"}),
            ToolCall(name="shell", arguments={"cmd": "ls"}),
        ],
        usage=Usage(input_tokens=300, output_tokens=12, cached_tokens=100),
    )
    with FakeLLM([turn]) as llm:
        reply = oai(llm).chat.completions.create(model="m", messages=[{"role": "user", "content": "go"}])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Reading first."
    calls = [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls]
    assert calls == [("read_file", {"path": "a.txt"}), ("shell", {"cmd": "ls"})]
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (
        300,
        12,
        312,
    )
    assert reply.usage.prompt_tokens_details.cached_tokens == 100


def test_chat_completions_streamed_tool_calls_and_usage_chunk() -> None:
    turn = Turn(
        tool_calls=[ToolCall(name="write_file", arguments={"path": "b.txt", "content": "x"})],
        usage=Usage(input_tokens=50, output_tokens=5),
    )
    with FakeLLM([turn, Turn(text="done")]) as llm:
        client = oai(llm)
        chunks = list(
            client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "go"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        plain = list(
            client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "go"}], stream=True
            )
        )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    name = "".join(t.function.name or "" for d in deltas for t in d.tool_calls or [])
    args = "".join(t.function.arguments or "" for d in deltas for t in d.tool_calls or [])
    assert (name, json.loads(args)) == ("write_file", {"path": "b.txt", "content": "x"})
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert (
        chunks[-1].choices == []
        and chunks[-1].usage.prompt_tokens == 50
        and chunks[-1].usage.completion_tokens == 5
    )
    assert "".join(c.choices[0].delta.content or "" for c in plain) == "done"
    assert all(c.usage is None for c in plain)  # usage only when asked, as OpenAI does


def test_chat_reply_goes_to_the_reply_tool_when_offered() -> None:
    script = Script(reply_tool="submit_reply", turns=[Turn(reply={"ok": True}), Turn(reply={"ok": False})])
    tools = [{"type": "function", "function": {"name": "submit_reply", "parameters": FN}}]
    with FakeLLM(script) as llm:
        with_tool = oai(llm).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "go"}], tools=tools
        )
        without = oai(llm).chat.completions.create(model="m", messages=[{"role": "user", "content": "go"}])
    call = with_tool.choices[0].message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("submit_reply", {"ok": True})
    assert json.loads(without.choices[0].message.content) == {"ok": False}


def test_anthropic_stream_text_tool_use_and_usage() -> None:
    turn = Turn(
        text="Writing.",
        tool_calls=[
            ToolCall(name="Write", arguments={"file_path": "a.txt", "content": "hi\n"}),
            ToolCall(name="mcp__adder__add", arguments={"a": 1, "b": 2}),
        ],
        usage=Usage(input_tokens=2000, output_tokens=50, cached_tokens=1500),
    )
    with FakeLLM([turn, Turn(text="All done.")]) as llm:
        first = claude_stream(llm)
        second = claude_stream(llm)
    text, write, mcp = first.content
    assert text.text == "Writing." and first.stop_reason == "tool_use"
    assert (write.name, write.input) == ("Write", {"file_path": "a.txt", "content": "hi\n"})
    assert (mcp.name, mcp.input) == ("mcp__adder__add", {"a": 1, "b": 2})  # Claude names MCP tools in full
    assert write.id != mcp.id
    assert (first.usage.input_tokens, first.usage.cache_read_input_tokens, first.usage.output_tokens) == (
        500,
        1500,
        50,
    )
    assert second.content[0].text == "All done." and second.stop_reason == "end_turn"


def test_anthropic_structured_output_tool_and_malformed_reply() -> None:
    tools = [{"name": "StructuredOutput", "input_schema": FN}]
    with FakeLLM([Turn(malformed=True), Turn(reply={"cmd": "ok"})]) as llm:
        bad = claude_stream(llm, tools=tools)
        good = claude(llm).messages.create(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "go"}], tools=tools
        )
    assert (bad.content[0].name, bad.content[0].input) == ("StructuredOutput", MALFORMED_REPLY)
    assert (good.content[0].name, good.content[0].input, good.stop_reason) == (
        "StructuredOutput",
        {"cmd": "ok"},
        "tool_use",
    )


def test_anthropic_side_endpoints_take_no_turn() -> None:
    with FakeLLM([Turn(text="only")]) as llm:
        count = claude(llm).messages.count_tokens(
            model="m", messages=[{"role": "user", "content": "x" * 400}]
        )
        assert httpx.head(f"{llm.url}/api/hello").status_code == 200
        assert httpx.get(f"{llm.url}/nope").status_code == 404
        assert llm.pending == [0]
        assert claude_stream(llm).content[0].text == "only"
    assert count.input_tokens == 100
    assert [r.path for r in llm.requests] == [
        "/v1/messages/count_tokens",
        "/api/hello",
        "/nope",
        "/v1/messages",
    ]
    assert [r.path for r in llm.model_requests] == ["/v1/messages"]


def test_keyed_turns_let_agents_share_one_server() -> None:
    script = Script(
        turns=[
            Turn(match="r001/a1/implementer", text="impl 1"),
            Turn(match="r001/a1/judge", text="judge 1"),
            Turn(text="unkeyed"),
            Turn(match="r001/a1/implementer", text="impl 2"),
        ]
    )
    with FakeLLM(script) as llm:
        client = oai(llm)

        def ask(prompt: str) -> str:
            messages = [
                {"role": "system", "content": "You are an agent."},
                {"role": "user", "content": prompt},
            ]
            return client.chat.completions.create(model="m", messages=messages).choices[0].message.content

        answers = [
            ask("call r001/a1/judge: judge"),
            ask("call r001/a1/implementer"),
            ask("other"),
            ask("call r001/a1/implementer"),
        ]
        with pytest.raises(openai.InternalServerError, match="exhausted"):
            ask("call r001/a1/judge again")
    assert answers == ["judge 1", "impl 1", "unkeyed", "impl 2"]
    assert [r.turn for r in llm.requests] == [1, 0, 2, 3, None]
    assert llm.requests[0].headers["authorization"] == "Bearer dummy"
    assert llm.requests[0].body["messages"][1]["content"] == "call r001/a1/judge: judge"


def test_exhausted_script_answers_500_and_names_the_request() -> None:
    with FakeLLM([Turn(text="one")]) as llm:
        assert oai(llm).responses.create(model="m", input="a").output_text == "one"
        with pytest.raises(
            openai.InternalServerError, match=r"script exhausted: request #2 \(POST /v1/responses\)"
        ):
            oai(llm).responses.create(model="m", input="b")
        with pytest.raises(openai.InternalServerError, match="request #3"):
            oai(llm).chat.completions.create(model="m", messages=[{"role": "user", "content": "c"}])
        with pytest.raises(anthropic.InternalServerError, match="all 1 turn"):
            claude_stream(llm)
    with FakeLLM([Turn(match="judge", text="j")]) as llm:
        with pytest.raises(openai.InternalServerError, match="keyed to \\['judge'\\]"):
            oai(llm).responses.create(model="m", input="implementer")
        assert llm.pending == [0]


def test_scripted_http_status_and_delay() -> None:
    with FakeLLM([Turn(status=429), Turn(status=529), Turn(delay_s=0.4, text="late")]) as llm:
        with pytest.raises(openai.RateLimitError, match="turn 0 is scripted to fail with HTTP 429"):
            oai(llm).responses.create(model="m", input="a")
        with pytest.raises(anthropic.APIStatusError) as err:
            claude_stream(llm)
        start = time.monotonic()
        assert claude_stream(llm).content[0].text == "late"
        assert time.monotonic() - start >= 0.4
    assert err.value.status_code == 529 and err.value.body["error"]["type"] == "overloaded_error"
    assert [r.status for r in llm.requests] == [429, 529, 200]


def _in_thread(fn) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


def test_hang_is_released_when_the_server_closes() -> None:
    llm = FakeLLM([Turn(hang=True)]).start()
    url = llm.openai_base_url
    thread, out = _in_thread(
        lambda: httpx.post(f"{url}/responses", json={"input": "x", "stream": True}, timeout=30)
    )
    time.sleep(0.3)
    assert thread.is_alive()  # no answer while the server runs
    start = time.monotonic()
    llm.close()
    thread.join(5)
    assert time.monotonic() - start < 5
    assert out[0].status_code == 503 and "shutting down" in out[0].text


def test_mid_stream_hang_sends_the_first_event_then_ends_at_close() -> None:
    llm = FakeLLM([Turn(text="never seen", hang="mid_stream")]).start()
    first = threading.Event()

    def read() -> list[str]:
        lines = []
        with httpx.stream(
            "POST", f"{llm.url}/v1/messages", json={"messages": [], "stream": True}, timeout=30
        ) as resp:
            for line in resp.iter_lines():
                lines.append(line)
                first.set()
        return lines

    thread, out = _in_thread(read)
    assert first.wait(5)
    time.sleep(0.2)
    assert thread.is_alive()
    llm.close()
    thread.join(5)
    assert out and out[0][0] == "event: message_start" and not any("never seen" in line for line in out[0])


def test_script_files_validation_and_the_standalone_server(tmp_path: Path) -> None:
    toml = tmp_path / "script.toml"
    toml.write_text(
        '[[turns]]\nmatch = "CODEX"\ntool_calls = [{ name = "exec_command", arguments = { cmd = "ls" } }]\n'
        "usage = { input_tokens = 10, output_tokens = 2 }\n\n[[turns]]\nreply = { ok = true }\n"
    )
    script = Script.load(toml)
    assert script.turns[0].tool_calls[0].arguments == {"cmd": "ls"} and script.turns[1].reply == {"ok": True}
    (tmp_path / "script.json").write_text(script.model_dump_json())
    assert Script.load(tmp_path / "script.json") == script
    with pytest.raises(ValidationError, match="cannot also call tools"):
        Turn(reply={"a": 1}, tool_calls=[ToolCall(name="x")])
    with pytest.raises(ValidationError):
        Turn(txet="typo")
    with pytest.raises(ValidationError, match="cannot exceed"):
        Usage(input_tokens=1, cached_tokens=2)

    proc = subprocess.Popen(
        [sys.executable, "-m", "vibeserve.testing.fake_llm", "--script", str(toml), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = proc.stdout.readline().split(" at ")[-1].strip()
        assert url.startswith("http://127.0.0.1:")
        body = {"input": "CODEX task", "stream": False}
        reply = httpx.post(f"{url}/v1/responses", json=body, timeout=10).json()
        assert reply["output"][0]["name"] == "exec_command" and reply["usage"]["input_tokens"] == 10
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "unconsumed turns: [1]" in err
