"""Drives ComfyUI's real frontend in headless Chromium over the DevTools protocol and reports what a user sees of the
pack: the ``dode.status`` toasts and Distill λ's report on its node.

Run with ComfyUI's Python (it has aiohttp): ``python browser_check.py COMFY_URL DEVTOOLS_URL PROMPT_JSON OUT_PNG``.
It opens the page, loads the API prompt into the graph (``app.loadApiJson``), queues it from the page (so the page is
the client), records every toast text while it runs and the text of the node widget ``dode_report``, saves a
screenshot, and prints ``{"toasts": [...], "report": ..., "error": ...}``."""
import asyncio
import base64
import json
import sys
import time
import urllib.request

import aiohttp

TOASTS = "Array.from(document.querySelectorAll('.p-toast-message')).map(e => e.innerText)"
REPORT = ("(() => { const n = window.app.graph._nodes.find(n => n.type === 'DODEDistillLambdas');"
          " const w = n && (n.widgets || []).find(w => w.name === 'dode_report'); return w ? w.value : null; })()")


async def main(url, devtools, prompt_file, out_png):
    prompt = json.loads(open(prompt_file).read())
    pages = json.loads(urllib.request.urlopen(devtools + "/json").read())
    target = next(p for p in pages if p["type"] == "page")["webSocketDebuggerUrl"]
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(target, max_msg_size=0) as ws:
            counter = 0

            async def call(method, **params):
                nonlocal counter
                counter += 1
                await ws.send_json({"id": counter, "method": method, "params": params})
                while True:
                    message = json.loads((await ws.receive(timeout=120)).data)
                    if message.get("id") == counter:
                        return message.get("result", {})

            async def evaluate(expression):
                result = await call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
                if "exceptionDetails" in result:
                    raise RuntimeError(result["exceptionDetails"].get("exception", {}).get("description"))
                return result.get("result", {}).get("value")

            await call("Page.enable")
            await call("Page.navigate", url=url)
            end = time.time() + 120
            while not await evaluate("!!(window.app && window.app.graph && window.app.extensionManager)"):
                assert time.time() < end, "the frontend did not start in 120 s"
                await asyncio.sleep(0.5)
            await asyncio.sleep(2)  # extensions register after the app object exists
            for kind in ("keyDown", "keyUp"):  # close the first-run template dialog, so the screenshot shows the graph
                await call("Input.dispatchKeyEvent", type=kind, key="Escape", code="Escape", windowsVirtualKeyCode=27)
            await evaluate("(async () => { await window.app.loadApiJson(%s, 'dode_e2e.json');"
                           " await window.app.queuePrompt(0, 1); return true; })()" % json.dumps(prompt))
            toasts, report, end = [], None, time.time() + 600
            while report is None and time.time() < end:
                for text in await evaluate(TOASTS):
                    if text not in toasts:
                        toasts.append(text)
                report = await evaluate(REPORT)
                await asyncio.sleep(0.3)
            for _ in range(20):  # the toasts of the KSampler that runs after Distill λ
                for text in await evaluate(TOASTS):
                    if text not in toasts:
                        toasts.append(text)
                await asyncio.sleep(0.3)
            shot = await call("Page.captureScreenshot", format="png")
            with open(out_png, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
    print(json.dumps({"toasts": toasts, "report": report, "error": None if report else "no report on the node"}))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
