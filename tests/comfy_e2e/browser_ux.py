"""Drives ComfyUI's real frontend in headless Chromium (DevTools protocol) through what a new user does with the pack
(issue 19) and prints what the page showed and sent, as JSON on stdout.

Run with ComfyUI's Python (it has aiohttp): ``python browser_ux.py COMFY_URL DEVTOOLS_URL STEPS_JSON OUT_PNG``.
STEPS_JSON: ``{"empty_load": prompt, "distill": prompt, "miss": prompt, "files": prompt}`` (API prompts). Steps:
1. a Distill λ node made as the node library makes it: its seed control's value;
(Other nodes' seed controls are set to fixed after each load, as a user's prompt would be.)
2. ``empty_load`` (Load λ → Save λ on an empty λ folder) queued from the page: the error the page shows;
3. ``distill`` loaded into the graph and queued twice from the page (``app.queuePrompt``), unchanged: the prompts
   the page sent (``api.queuePrompt`` is wrapped), the report panel on the node (text, size, style), the node size;
4. ``miss`` (KSampler ``euler_dode`` with no λ): the toasts and their severities;
5. ``files`` (λ Files): the rows on the node, then its first ✕ clicked (confirm answered yes): the toasts.
"""
import asyncio
import base64
import json
import sys
import time
import urllib.request

import aiohttp

TOASTS = ("Array.from(document.querySelectorAll('.p-toast-message')).map(e => [e.className.includes('warn') ? 'warn'"
          " : e.className.includes('error') ? 'error' : 'info', e.innerText])")
SETUP = """(async () => {
  const { api } = await import('/scripts/api.js');
  window.__dode = { api, sent: [] };
  const queue = api.queuePrompt.bind(api);
  api.queuePrompt = async (number, data, ...rest) => { window.__dode.sent.push(JSON.parse(JSON.stringify(data.output)));
                                                       return queue(number, data, ...rest); };
  window.confirm = () => true;
  return true; })()"""
IDLE = """(async () => { const q = await (await fetch('/queue')).json();
  return q.queue_running.length === 0 && q.queue_pending.length === 0; })()"""
PANEL = """(() => { const n = window.app.graph._nodes.find(n => n.type === '%s');
  if (!n) return null; const el = document.querySelector('[data-dode="%s"]');
  const w = (n.widgets || []).find(w => w.name === '%s');
  const style = el ? getComputedStyle(el) : null;
  return { node_size: Array.from(n.size), widget: !!w, widget_serialize: w ? w.serialize : null,
           option_serialize: w ? (w.options || {}).serialize : null,
           text: el ? el.innerText : null, height: el ? el.clientHeight : null,
           scroll_height: el ? el.scrollHeight : null, overflow: style ? style.overflowY : null,
           opacity: style ? style.opacity : null, background: style ? style.backgroundColor : null,
           rows: el ? el.querySelectorAll('.dode-entry').length : 0,
           buttons: el ? el.querySelectorAll('.dode-remove').length : 0 }; })()"""


async def main(url, devtools, steps_file, out_png):
    steps = json.loads(open(steps_file).read())
    pages = json.loads(urllib.request.urlopen(devtools + "/json").read())
    target = next(p for p in pages if p["type"] == "page")["webSocketDebuggerUrl"]
    seen = {"error": None}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(target, max_msg_size=0) as ws:
            counter = 0

            async def call(method, **params):
                nonlocal counter
                counter += 1
                await ws.send_json({"id": counter, "method": method, "params": params})
                while True:
                    message = json.loads((await ws.receive(timeout=300)).data)
                    if message.get("id") == counter:
                        return message.get("result", {})

            async def evaluate(expression):
                result = await call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
                if "exceptionDetails" in result:
                    raise RuntimeError(result["exceptionDetails"].get("exception", {}).get("description"))
                return result.get("result", {}).get("value")

            async def escape():
                for kind in ("keyDown", "keyUp"):
                    await call("Input.dispatchKeyEvent", type=kind, key="Escape", code="Escape",
                               windowsVirtualKeyCode=27)

            async def toasts_for(seconds, into):
                end = time.time() + seconds
                while time.time() < end:
                    for item in await evaluate(TOASTS):
                        if item not in into:
                            into.append(item)
                    await asyncio.sleep(0.3)

            async def queue(prompt, wait=True):
                # the test-only conditioning node has a "seed" input, which the frontend gives a randomize control:
                # fixed, as a user's prompt would be; Distill λ's own control is left as the pack sets it
                await evaluate("(async () => { await window.app.loadApiJson(%s, 'dode_ux.json');"
                               " for (const n of window.app.graph._nodes) { if (n.type === 'DODEDistillLambdas')"
                               " continue; for (const w of n.widgets || []) for (const c of w.linkedWidgets || [])"
                               " c.value = 'fixed'; }"
                               " await window.app.queuePrompt(0, 1); return true; })()" % json.dumps(prompt))
                end = time.time() + 600
                await asyncio.sleep(1.0)
                while wait and not await evaluate(IDLE):
                    assert time.time() < end, "the queue did not empty in 600 s"
                    await asyncio.sleep(0.3)
                await asyncio.sleep(1.0)  # the executed message reaches the node

            await call("Page.enable")
            await call("Page.navigate", url=url)
            end = time.time() + 120
            while not await evaluate("!!(window.app && window.app.graph && window.app.extensionManager)"):
                assert time.time() < end, "the frontend did not start in 120 s"
                await asyncio.sleep(0.5)
            await asyncio.sleep(2)
            await escape()
            await evaluate(SETUP)

            # 1. a Distill λ as the node library makes it
            seen["new_node_seed_control"] = await evaluate(
                "(() => { const n = LiteGraph.createNode('DODEDistillLambdas'); window.app.graph.add(n);"
                " const s = n.widgets.find(w => w.name === 'seed'); const c = s.linkedWidgets?.[0];"
                " const v = c ? c.value : null; window.app.graph.remove(n); return v; })()")

            # 2. Load λ on an empty folder
            await queue(steps["empty_load"])
            await asyncio.sleep(1.5)
            seen["empty_load_page_text"] = await evaluate("document.body.innerText")
            await escape()
            await evaluate("document.querySelectorAll('.p-dialog-close-button').forEach(b => b.click())")

            # 3. Distill λ queued twice, unchanged
            sent_before = await evaluate("window.__dode.sent.length")
            distill_toasts = []
            await queue(steps["distill"])
            await toasts_for(2, distill_toasts)
            seen["report_first"] = await evaluate(PANEL % ("DODEDistillLambdas", "dode_report", "dode_report"))
            await evaluate("(async () => { await window.app.queuePrompt(0, 1); return true; })()")
            end = time.time() + 600
            await asyncio.sleep(1.0)
            while not await evaluate(IDLE):
                assert time.time() < end
                await asyncio.sleep(0.3)
            await asyncio.sleep(1.0)
            seen["report_second"] = await evaluate(PANEL % ("DODEDistillLambdas", "dode_report", "dode_report"))
            seen["distill_sent"] = (await evaluate("window.__dode.sent"))[sent_before:]
            seen["distill_toasts"] = distill_toasts
            seen["seed_control_after_queue"] = await evaluate(
                "(() => { const n = window.app.graph._nodes.find(n => n.type === 'DODEDistillLambdas');"
                " return n.widgets.find(w => w.name === 'seed').linkedWidgets?.[0]?.value ?? null; })()")
            shot = await call("Page.captureScreenshot", format="png")
            with open(out_png, "wb") as f:
                f.write(base64.b64decode(shot["data"]))

            # 4. a miss the user chose *_dode for
            miss_toasts = []
            await evaluate("window.app.extensionManager.toast.removeAll?.()")
            await queue(steps["miss"])
            await toasts_for(2, miss_toasts)
            seen["miss_toasts"] = miss_toasts

            # 5. λ Files: rows on the node, then remove the first entry
            await queue(steps["files"])
            seen["files_panel"] = await evaluate(PANEL % ("DODELambdaFiles", "dode_entries", "dode_entries"))
            files_toasts = []
            await evaluate("document.querySelector('[data-dode=\"dode_entries\"] .dode-remove')?.click()")
            await toasts_for(3, files_toasts)
            seen["files_toasts"] = files_toasts
            seen["files_panel_after"] = await evaluate(PANEL % ("DODELambdaFiles", "dode_entries", "dode_entries"))
    print(json.dumps(seen))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
