"""Drive celeriac-api's /mcp with the official MCP Python client (mcp 2.x) for api/tests/mcp.rs.

Reads a plan as JSON on stdin:
    {"url": ".../mcp", "key": "cak_..." or null, "mode": "legacy" | "auto",
     "calls": [{"tool": "get_job", "arguments": {"id": "$result:0:id"}}, ...]}
An argument string "$result:N:FIELD" is replaced by FIELD of call N's structured result (so a job id returned by
run_analysis can be passed to get_job in the same run).

Prints one JSON object: the HTTP statuses the client saw, the negotiated protocol version, the server's name, the
listed tools (as the client parsed them), and per call: is_error, structured content, text content, or the exception the client raised (an output
that does not match the tool's outputSchema raises here, because the client validates it). A failure to connect
is reported as {"error": "..."}.
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


def describe(exc: BaseException) -> str:
    """The exception and, for exception groups, every nested one (connection errors arrive grouped)."""
    parts = [f"{type(exc).__name__}: {exc}"]
    response = getattr(exc, "response", None)
    if response is not None and hasattr(response, "status_code"):
        parts.append(f"HTTP {response.status_code}")
    for sub in getattr(exc, "exceptions", None) or []:
        parts.append(describe(sub))
    if exc.__cause__ is not None:
        parts.append("caused by " + describe(exc.__cause__))
    return " | ".join(parts)


def substitute(value, results):
    if isinstance(value, str) and value.startswith("$result:"):
        _, index, field = value.split(":", 2)
        return (results[int(index)].get("structured") or {}).get(field)
    if isinstance(value, dict):
        return {k: substitute(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, results) for v in value]
    return value


async def run(plan: dict) -> dict:
    headers = {"X-API-Key": plan["key"]} if plan.get("key") else {}
    out: dict = {"http_statuses": []}

    async def record(response: httpx2.Response) -> None:
        # The client reports a 401 only as "Server returned an error response"; keep the statuses it saw.
        out["http_statuses"].append(response.status_code)

    async with httpx2.AsyncClient(
        headers=headers, timeout=httpx2.Timeout(60.0), event_hooks={"response": [record]}
    ) as http:
        try:
            transport = streamable_http_client(plan["url"], http_client=http)
            async with Client(transport, mode=plan.get("mode", "auto"), cache=None) as client:
                out["protocol_version"] = client.protocol_version
                info = client.server_info
                out["server_name"] = info.name if info is not None else None
                listed = await client.list_tools()
                out["tools"] = [
                    t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in listed.tools
                ]
                results: list = []
                for call in plan.get("calls", []):
                    entry: dict = {"tool": call["tool"]}
                    try:
                        args = substitute(call.get("arguments") or {}, results)
                        r = await client.call_tool(call["tool"], args)
                        entry["is_error"] = bool(r.is_error)
                        entry["structured"] = r.structured_content
                        entry["text"] = [c.text for c in r.content if getattr(c, "type", None) == "text"]
                    except Exception as e:  # noqa: BLE001 - reported to the Rust side
                        entry["exception"] = describe(e)
                    results.append(entry)
                out["results"] = results
        except BaseException as e:  # noqa: BLE001 - connection failures arrive as exception groups
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            out["error"] = describe(e)
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.load(sys.stdin)))))
