"""Queues one prompt on a running ComfyUI and reports what its websocket sent for it, as JSON on stdout.

Run with ComfyUI's Python (it has aiohttp): ``python ws_watch.py URL PROMPT_JSON_FILE``. Prints
``{"prompt_id", "progress": [[node, value, max], ...], "binary": [event type, ...], "dode": [{"text", "level",
"node"}, ...], "executed": {node: ui output}, "error": ...}`` (``dode``: the pack's ``dode.status`` messages)."""
import asyncio
import json
import struct
import sys
import uuid

import aiohttp


async def main(url, prompt_file):
    client_id = f"dode-ws-{uuid.uuid4().hex[:8]}"
    prompt = json.loads(open(prompt_file).read())
    progress, binary, dode, executed, error = [], [], [], {}, None
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{url}/ws?clientId={client_id}") as ws:
            async with session.post(f"{url}/prompt", json={"prompt": prompt, "client_id": client_id}) as r:
                prompt_id = (await r.json())["prompt_id"]
            while True:
                msg = await asyncio.wait_for(ws.receive(), timeout=600)
                if msg.type == aiohttp.WSMsgType.BINARY:
                    binary.append(struct.unpack(">I", msg.data[:4])[0])
                    continue
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                event = json.loads(msg.data)
                data = event.get("data", {})
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                if event["type"] == "dode.status":
                    dode.append(data)
                elif event["type"] == "executed":
                    executed[data.get("node")] = data.get("output")
                elif event["type"] == "progress":
                    progress.append([data.get("node"), data["value"], data["max"]])
                elif event["type"] == "execution_error":
                    error = data.get("exception_message")
                    break
                elif event["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                    break
                elif event["type"] == "execution_success":
                    break
    print(json.dumps({"prompt_id": prompt_id, "progress": progress, "binary": binary, "dode": dode,
                      "executed": executed, "error": error}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
