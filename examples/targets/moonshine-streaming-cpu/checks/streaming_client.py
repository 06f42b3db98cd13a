"""The checker's and the probe command's side of the streaming protocol (INSTRUCTIONS.md): open a stream, send
its chunks, read each chunk's partial transcript; every way a server can get it wrong becomes a message."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx


class StreamFailed(Exception):
    pass


async def _chunk(client: httpx.AsyncClient, url: str, seq: int, body: bytes, max_tokens: int) -> dict:
    try:
        async with client.stream("POST", url, params={"seq": seq, "max_tokens": max_tokens}, content=body,
                                 headers={"content-type": "application/octet-stream"}) as r:
            if r.status_code != 200:
                return {"error": f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"}
            tokens, finish = [], None
            async for line in r.aiter_lines():
                if not line.strip():
                    continue
                obj = json.loads(line)
                if "error" in obj:
                    return {"error": f"server error: {obj['error']}"[:300]}
                if finish is not None:
                    return {"error": f"a line after done: {line[:100]}"}
                if "token" in obj:
                    tokens.append(obj["token"])
                elif obj.get("done") is True:
                    finish = obj.get("finish_reason")
            if finish is None:
                return {"error": "the answer ended without a done line", "tokens": tokens}
            return {"tokens": tokens, "finish_reason": finish}
    except (httpx.HTTPError, ValueError) as e:
        return {"error": f"{type(e).__name__}: {e}"[:300]}


async def run_stream(client: httpx.AsyncClient, url: str, chunks: list[bytes], max_tokens: int,
                     wait_each: bool) -> list[dict]:
    """One stream's answers, one per chunk. ``wait_each``: each chunk sent after the last was answered;
    otherwise all at once (each its own request, as a client on a clock faster than the server sends them)."""
    try:
        r = await client.post(url + "/v1/streams", json={"sample_rate": 16000})
        r.raise_for_status()
        stream_id = r.json()["stream_id"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
        return [{"error": f"opening the stream: {type(e).__name__}: {e}"[:300]}] * len(chunks)
    chunk_url = f"{url}/v1/streams/{stream_id}/chunks"
    if wait_each:
        answers = [await _chunk(client, chunk_url, k, body, max_tokens) for k, body in enumerate(chunks)]
    else:
        answers = list(await asyncio.gather(*(_chunk(client, chunk_url, k, body, max_tokens)
                                              for k, body in enumerate(chunks))))
    with contextlib.suppress(httpx.HTTPError):
        await client.delete(f"{url}/v1/streams/{stream_id}")
    return answers


def compare(expected: list[int], answer: dict) -> dict:
    if "error" in answer:
        return {"status": "error", "error": answer["error"], "expected": expected}
    got = answer["tokens"]
    if got == expected:
        return {"status": "ok"}
    at = next((i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b), min(len(expected), len(got)))
    return {"status": "mismatch", "first_difference_at_token": at, "expected": expected, "got": got}
