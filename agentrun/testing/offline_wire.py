"""The chat-completions wire format the offline model speaks: the streamed chunks (role, content,
tool-call fragments interleaved as real providers do, finish, usage) and the non-streamed
completion, with rough token counts."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from agentrun.testing.offline_agent import Reply


def _words(text: str) -> int:
    return max(1, len(text.split())) if text else 0


def _estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    total = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            total += len(content) // 4 + 4
        for call in m.get("tool_calls") or []:
            total += len(json.dumps(call)) // 4
    return total


def _has_payload(chunk: dict[str, Any]) -> bool:
    delta = chunk["choices"][0].get("delta") or {}
    return bool(delta.get("content") or delta.get("tool_calls"))


def _chunks(body: dict[str, Any], reply: Reply) -> Iterator[dict[str, Any]]:
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    model = body.get("model") or "offline-scripted"
    tools_offered = bool(body.get("tools"))

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    yield chunk({"role": "assistant", "content": ""})
    text = reply.text
    step = max(1, reply.chunk_chars)
    for i in range(0, len(text), step):
        yield chunk({"content": text[i : i + step]})
    calls = reply.tool_calls if tools_offered else []
    fragments: list[list[dict[str, Any]]] = []
    for index, call in enumerate(calls):
        args = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
        call_id = call.id or f"call_{uuid.uuid4().hex[:20]}"
        parts = [
            {
                "index": index,
                "id": call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
        ]
        size = max(1, reply.args_chunk_chars)
        parts += [
            {"index": index, "function": {"arguments": args[j : j + size]}}
            for j in range(0, len(args), size)
        ]
        fragments.append(parts)
    if reply.interleave_tool_calls:
        # Real providers interleave the fragments of parallel calls; so do we.
        while any(fragments):
            for parts in fragments:
                if parts:
                    yield chunk({"tool_calls": [parts.pop(0)]})
    else:
        for parts in fragments:
            for part in parts:
                yield chunk({"tool_calls": [part]})
    yield chunk({}, "tool_calls" if calls else "stop")
    completion = _words(text) + sum(len(json.dumps(c.arguments)) // 4 for c in calls)
    prompt = _estimate_prompt_tokens(body.get("messages") or [])
    if (body.get("stream_options") or {}).get("include_usage"):
        yield {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": reply.usage
            or {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }


def _completion(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    calls = reply.tool_calls if body.get("tools") else []
    prompt = _estimate_prompt_tokens(body.get("messages") or [])
    completion = _words(reply.text)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or "offline-scripted",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls" if calls else "stop",
                "message": {
                    "role": "assistant",
                    "content": reply.text or None,
                    "tool_calls": [
                        {
                            "id": c.id or f"call_{uuid.uuid4().hex[:20]}",
                            "type": "function",
                            "function": {
                                "name": c.name,
                                "arguments": c.arguments
                                if isinstance(c.arguments, str)
                                else json.dumps(c.arguments),
                            },
                        }
                        for c in calls
                    ]
                    or None,
                },
            }
        ],
        "usage": reply.usage
        or {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }
