"""End-to-end, what a new user meets (issue 19), in a real ComfyUI (skipped unless ``COMFYUI_DIR`` is set; the browser
part also needs ``DODE_E2E_CHROMIUM`` and ComfyUI's frontend package, as tests/test_comfy_e2e.py).

Over HTTP: cfg −3 and denoise 1.5 on Distill λ are refused when queued, naming the input; the ``dode`` scheduler on
Distill λ gives one error naming ``scheduler``; Load λ on an empty λ folder says what to do; Distill λ alone runs (an
output node) and, queued twice unchanged, fits once; the λ Files route removes one entry and keeps the others.
In the browser (tests/comfy_e2e/browser_ux.py): a new Distill λ's seed control is "fixed"; the prompt the page sends
has no report input and is the same twice; the λ file is written once; the report panel is compact, scrollable and
opaque; Load λ on an empty folder shows what to do; a miss is a warning toast of one line; λ Files removes an entry.
"""
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from test_comfy_e2e import CFG, CHROMIUM, COMFY, SUPPORT, base_graph, distill, free_port, ksampler, server  # noqa: F401

pytestmark = pytest.mark.skipif(not COMFY, reason="set COMFYUI_DIR to a ComfyUI checkout to run the e2e suite")
NO_FILES = "no λ files yet — run Distill λ first"


def refused(server, graph):
    """The node_errors of a prompt ComfyUI refuses (HTTP 400)."""
    req = urllib.request.Request(server.url + "/prompt", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"prompt": graph, "client_id": "dode-e2e"}).encode())
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(req, timeout=60)
    assert error.value.code == 400
    return json.loads(error.value.read().decode())


def alone(graph):
    """A Distill λ graph without its SaveLatent: Distill λ is the output."""
    graph.pop("9", None)
    return graph


def empty_load_graph():
    return {"6": {"class_type": "DODELoadLambdas", "inputs": {"lambda_file": NO_FILES}},
            "7": {"class_type": "DODESaveLambdas", "inputs": {"lambdas": ["6", 0], "filename": "copy"}}}


def test_an_empty_lambda_folder_says_what_to_do(server):
    assert not server.lambda_files()  # runs first in this module's own ComfyUI
    info = server.get("/object_info/DODELoadLambdas")["DODELoadLambdas"]["input"]["required"]["lambda_file"]
    assert info[1]["options"] == [NO_FILES]
    answer = refused(server, empty_load_graph())
    (error,) = answer["node_errors"]["6"]["errors"]
    assert error["extra_info"]["input_name"] == "lambda_file" and NO_FILES in error["details"], error
    text = json.dumps(answer, ensure_ascii=False)
    assert "undefined" not in text and "TypeError" not in text and "missing 1 required" not in text


def test_range_checks_and_one_error_per_cause(server):
    for name, value, kind in (("cfg", -3.0, "value_smaller_than_min"), ("denoise", 1.5, "value_bigger_than_max")):
        graph = distill("euler", "bad_range")
        graph["5"]["inputs"][name] = value
        (error,) = refused(server, graph)["node_errors"]["5"]["errors"]
        assert error["type"] == kind and error["extra_info"]["input_name"] == name, error
    graph = distill("euler", "bad_scheduler")
    graph["5"]["inputs"]["scheduler"] = "dode"
    (error,) = refused(server, graph)["node_errors"]["5"]["errors"]  # one cause: one error, naming scheduler
    assert error["extra_info"]["input_name"] == "scheduler" and "Distill λ fits a stock scheduler" in error["details"]


def test_distill_alone_runs_and_fits_once_when_queued_twice(server):
    graph = alone(distill("euler", "unused", steps=3, scale=2, objective="greedy"))
    graph["5"]["inputs"]["seed"] = 81
    first = server.run(graph, timeout=600)
    (path,) = [f for f in server.lambda_files() if f.name.endswith("-euler.safetensors")]
    stamp = path.stat().st_mtime_ns
    fits = server.log().count("[dode] Distill λ: euler, 3 steps")
    assert fits == 1 and first["outputs"]["5"]["text"][0].startswith("D-ODE euler")
    second = server.run(graph, timeout=600)
    assert path.stat().st_mtime_ns == stamp and server.log().count("[dode] Distill λ: euler, 3 steps") == 1
    cached = [m for m in second["status"]["messages"] if m[0] == "execution_cached"]
    assert cached and "5" in cached[0][1]["nodes"], second["status"]["messages"]
    assert not list(path.parent.glob("*.safetensors.lock"))  # one .dode.lock per folder, nothing beside the files


def test_lambda_files_lists_and_removes_one_entry(server):
    from dode import load_lambdas
    for steps in (3, 4):
        graph = alone(distill("heun", "unused", steps=steps, scale=2, objective="greedy"))
        server.run(graph, timeout=600)
    (path,) = [f for f in server.lambda_files() if f.name.endswith("-heun.safetensors")]
    assert len(load_lambdas(path)) == 2
    graph = base_graph()
    graph["6"] = {"class_type": "DODELambdaFiles", "inputs": {"model": ["1", 0]}}
    rows = server.run(graph)["outputs"]["6"]["dode_entries"]
    heun = [r for r in rows if r["file"] == path.name]
    assert len(heun) == 2 and all(r["this_model"] for r in heun)
    answer = server.post("/dode/lambdas/remove", {"file": path.name, "id": heun[0]["id"]})
    assert answer["left"] == 1 and answer["title"] == heun[0]["title"]
    (kept,) = load_lambdas(path)
    assert kept.steps == int(heun[1]["title"].split(", ")[1].split()[0])
    listed = server.get("/dode/lambdas")["rows"]
    assert heun[0]["id"] not in {r.get("id") for r in listed} and heun[1]["id"] in {r.get("id") for r in listed}


@pytest.mark.skipif(not CHROMIUM, reason="set DODE_E2E_CHROMIUM to a Chromium binary (with ComfyUI's frontend "
                                         "package installed) to check what the browser shows")
def test_what_the_frontend_sends_and_shows(server, tmp_path):
    for f in server.lambda_files():  # an empty λ folder for Load λ
        f.unlink()
    distill_graph = alone(distill("dpmpp_2m", "unused", steps=3, scale=2, objective="greedy"))
    distill_graph["5"]["inputs"]["seed"] = 91
    miss = ksampler("euler_dode", 93, "browser_miss")
    miss["5"]["inputs"]["steps"] = 5
    files = base_graph()
    files["6"] = {"class_type": "DODELambdaFiles", "inputs": {"model": ["1", 0]}}
    steps_file = tmp_path / "steps.json"
    steps_file.write_text(json.dumps({"empty_load": empty_load_graph(), "distill": distill_graph, "miss": miss,
                                      "files": files}))
    port = free_port()
    chrome = subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,1000",
                               f"--remote-debugging-port={port}", f"--user-data-dir={tmp_path / 'profile'}",
                               "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        devtools = f"http://127.0.0.1:{port}"
        end = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(devtools + "/json", timeout=5).read()
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                assert time.time() < end and chrome.poll() is None, "Chromium did not start"
                time.sleep(0.5)
        python = os.environ.get("COMFYUI_PYTHON", sys.executable)
        shot = tmp_path / "ux.png"
        done = subprocess.run([python, str(SUPPORT / "browser_ux.py"), server.url + "/", devtools, str(steps_file),
                               str(shot)], capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, done.stderr[-3000:]
        seen = json.loads(done.stdout.strip().splitlines()[-1])
        if os.environ.get("DODE_E2E_KEEP"):
            import shutil
            shutil.copy(shot, os.environ["DODE_E2E_KEEP"] + ".ux.png")
            (tmp_path / "seen.json").write_text(json.dumps(seen, indent=1, ensure_ascii=False))
            shutil.copy(tmp_path / "seen.json", os.environ["DODE_E2E_KEEP"] + ".ux.json")
    finally:
        chrome.terminate()
        chrome.wait(timeout=30)
    # 1. caching: a new node's seed is fixed; the prompt has no report input and is the same twice; one fit
    assert seen["new_node_seed_control"] == "fixed", seen
    assert seen["seed_control_after_queue"] == "fixed"
    first, second = seen["distill_sent"]
    assert first == second, (first, second)
    node = next(n for n in first.values() if n["class_type"] == "DODEDistillLambdas")
    assert set(node["inputs"]) <= {"model", "positive", "negative", "latent_image", "seed", "cfg", "sampler_name",
                                   "scheduler", "steps", "denoise", "teacher", "scale", "save", "sigmas", "objective",
                                   "fit_schedule"}, node["inputs"]
    assert server.log().count("[dode] Distill λ: dpmpp_2m, 3 steps") == 1  # the λ file was written once
    # 3. Load λ on an empty folder: the page says what to do
    assert NO_FILES in seen["empty_load_page_text"] and "undefined" not in seen["empty_load_page_text"]
    # 4. the report: compact, scrollable, opaque, kept out of the prompt and the workflow
    report = seen["report_second"]
    assert report["text"].startswith("D-ODE dpmpp_2m") and report["widget_serialize"] is False
    assert report["option_serialize"] is False and report["overflow"] == "auto" and report["opacity"] == "1"
    # (the node's height also holds ComfyUI's own latent preview of the fit, as a KSampler's does)
    assert report["height"] <= 150 and report["scroll_height"] > report["height"] and report["node_size"][0] < 480, \
        report
    # 5. a miss is a warning of one line
    misses = [(level, text) for level, text in seen["miss_toasts"] if "ran as plain euler" in text]
    assert misses and all(level == "warn" for level, _ in misses), seen["miss_toasts"]
    assert all(len(text) < 250 and "fp1-" not in text for _, text in misses), misses
    # 6. toasts without internals
    for level, text in seen["distill_toasts"] + seen["miss_toasts"]:
        assert "fp1-" not in text and "latent rows" not in text, text
    # 7. λ Files: rows with remove buttons; one removed
    assert seen["files_panel"]["buttons"] >= 1
    assert any("removed" in text for _, text in seen["files_toasts"]), seen["files_toasts"]
    assert seen["files_panel_after"]["rows"] == seen["files_panel"]["rows"] - 1
    assert seen["files_panel_after"]["text"].startswith(NO_FILES) or "entr" in seen["files_panel_after"]["text"]
    assert not [f for f in server.lambda_files() if f.name.endswith("-dpmpp_2m.safetensors")]  # its only entry
