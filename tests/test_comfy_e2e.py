"""End-to-end: the pack inside a real ComfyUI, headless on CPU, driven over its HTTP API.

Skipped unless ``COMFYUI_DIR`` points at a ComfyUI checkout. ``COMFYUI_PYTHON`` is the Python that runs ComfyUI
(default: this one). The test builds a temporary base directory with this repository as ``custom_nodes/dode``, a
test-only conditioning node, and a tiny random MMDiT (built with ComfyUI's own class) in
``models/diffusion_models``, starts ``main.py --cpu`` on a free port and checks:

- ``/object_info`` lists the D-ODE nodes, ``<name>_dode`` in KSampler's / KSamplerSelect's ``sampler_name`` and
  ``dode`` in KSampler's / KSamplerAdvanced's / BasicScheduler's ``scheduler``; the frontend extension is served;
- Distill λ's λ chart (IMAGE output, last) saves through SaveImage; with previews on (latent2rgb), distilling sends
  latent previews and one progress bar over teacher, stock and student (watched on the websocket);
- KSampler with ``<name>_dode`` and no λ gives the same latent as ``<name>`` (bit-identical, DEIS included), and the
  ``dode`` scheduler without a fit gives exactly the ``simple`` scheduler's result;
- Distill λ with fit_schedule, then KSampler ``<name>_dode`` on the ``dode`` scheduler samples the fitted grid with
  its λ (log, equal to SamplerCustom fed by Distill λ's SIGMAS and SAMPLER, different from stock); a KSampler fed by
  Distill λ's MODEL re-runs with the new fit when the distillation changes, without a seed change;
- the pack's ``dode.status`` messages reach the browser over the websocket, and Distill λ's report is a UI output;
  with ``DODE_E2E_CHROMIUM`` set (and ComfyUI's frontend package installed), headless Chromium on the real frontend
  shows them: toasts, and the report on the Distill λ node (web/dode.js);
- the Distill λ graph writes a λ file, and a later KSampler ``euler_dode`` run picks it up and differs from stock;
- D-ODE Sampler + SamplerCustom with the loaded λ file equals the KSampler ``euler_dode`` run;
- D-ODE Model Options (on_missing = error / auto_distill) and interrupting a distillation (no partial file);
- the server log has no "IMPORT FAILED" for the pack.
"""
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

COMFY = os.environ.get("COMFYUI_DIR")
CHROMIUM = os.environ.get("DODE_E2E_CHROMIUM")  # a Chromium binary: also check what the browser shows
pytestmark = pytest.mark.skipif(not COMFY, reason="set COMFYUI_DIR to a ComfyUI checkout to run the e2e suite")

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = Path(__file__).resolve().parent / "comfy_e2e"
MODEL = "tiny_mmdit.safetensors"
STEPS, CFG, SCHEDULER = 4, 2.0, "simple"
DODE_NODES = ("DODEDistillLambdas", "DODESampler", "DODELoadLambdas", "DODESaveLambdas", "DODEModelOptions",
              "DODELambdaFiles")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, base, log_path, proc, port):
        self.base, self.log_path, self.proc = base, log_path, proc
        self.url = f"http://127.0.0.1:{port}"

    def log(self):
        return self.log_path.read_text(errors="replace")

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            return json.loads(r.read())

    def post(self, path, body):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                data = r.read()
                return json.loads(data) if data else {}
        except urllib.error.HTTPError as e:
            raise AssertionError(f"POST {path} failed: {e.code} {e.read().decode(errors='replace')}") from e

    def queue(self, prompt):
        return self.post("/prompt", {"prompt": prompt, "client_id": "dode-e2e"})["prompt_id"]

    def wait(self, prompt_id, timeout=300):
        end = time.time() + timeout
        while time.time() < end:
            hist = self.get(f"/history/{prompt_id}")
            if prompt_id in hist and hist[prompt_id].get("status", {}).get("completed") is not None:
                status = hist[prompt_id]["status"]
                if status.get("status_str") in ("success", "error") or status.get("completed"):
                    return hist[prompt_id]
            assert self.proc.poll() is None, f"ComfyUI exited:\n{self.log()[-4000:]}"
            time.sleep(0.2)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout}s:\n{self.log()[-4000:]}")

    def run(self, prompt, timeout=300):
        entry = self.wait(self.queue(prompt), timeout)
        status = entry["status"]
        assert status.get("status_str") == "success", \
            f"prompt failed: {json.dumps(status.get('messages'))[-3000:]}\n{self.log()[-3000:]}"
        return entry

    def latent(self, entry, node="9"):
        info = entry["outputs"][node]["latents"][0]
        from safetensors.torch import load_file
        path = self.base / "output" / info.get("subfolder", "") / info["filename"]
        return load_file(str(path))["latent_tensor"]

    def lambda_files(self):
        folder = self.base / "models" / "dode_lambdas"
        return sorted(folder.glob("*.safetensors")) if folder.is_dir() else []


def comfy_base(base, builder, model):
    """(ComfyUI's python, ``base``) with ``base`` laid out as a ComfyUI base directory: this pack and the test
    conditioning nodes in custom_nodes/, and the tiny model that SUPPORT/``builder`` makes as
    models/diffusion_models/``model``."""
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "dode").symlink_to(ROOT, target_is_directory=True)
    (base / "custom_nodes" / "dode_e2e_cond").symlink_to(SUPPORT / "dode_e2e_cond", target_is_directory=True)
    models = base / "models" / "diffusion_models"
    models.mkdir(parents=True)
    subprocess.run([python, str(SUPPORT / builder), COMFY, str(models / model)], check=True,
                   capture_output=True, timeout=300)
    return python, base


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    python, base = comfy_base(tmp_path_factory.mktemp("comfy_base"), "make_tiny_mmdit.py", MODEL)
    # the real frontend only for the browser check; latent previews so that sampling and distilling make them
    with comfyui(python, base, ["--preview-method", "latent2rgb"], real_frontend=bool(CHROMIUM)) as srv:
        yield srv


@contextlib.contextmanager
def comfyui(python, base, extra_args=(), real_frontend=False):
    """ComfyUI's main.py on CPU on a free port with ``base`` as its base directory (a placeholder frontend unless
    ``real_frontend``), as a Server once it answers; stopped when the block ends (its log kept under
    DODE_E2E_KEEP)."""
    ui = []
    if not real_frontend:
        frontend = base / "frontend"
        frontend.mkdir()
        (frontend / "index.html").write_text("<html>dode e2e</html>")
        ui = ["--front-end-root", str(frontend)]
    port = free_port()
    log_path = base / "comfyui.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                                 "--disable-auto-launch", "--disable-api-nodes", *ui, *extra_args,
                                 "--base-directory", str(base)],
                                cwd=COMFY, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    srv = Server(base, log_path, proc, port)
    try:
        end = time.time() + 300
        while True:
            assert proc.poll() is None, f"ComfyUI exited during start-up:\n{srv.log()[-4000:]}"
            try:
                srv.get("/system_stats")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                assert time.time() < end, f"ComfyUI did not start in 300 s:\n{srv.log()[-4000:]}"
                time.sleep(0.5)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if os.environ.get("DODE_E2E_KEEP"):
            shutil.copy(log_path, os.environ["DODE_E2E_KEEP"])


def base_graph(batch=1):
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": MODEL, "weight_dtype": "default"}},
        "2": {"class_type": "DodeE2EConditioning", "inputs": {"seed": 1, "tokens": 8}},
        "3": {"class_type": "DodeE2EConditioning", "inputs": {"seed": 2, "tokens": 8}},
        "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": batch}},
    }


def ksampler(sampler, seed, prefix, model=("1", 0), scheduler=SCHEDULER):
    graph = base_graph()
    graph["5"] = {"class_type": "KSampler", "inputs": {
        "model": list(model), "seed": seed, "steps": STEPS, "cfg": CFG, "sampler_name": sampler,
        "scheduler": scheduler, "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
        "denoise": 1.0}}
    graph["9"] = {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": prefix}}
    return graph


def distill(sampler, prefix, steps=STEPS, scale=4, batch=2, **new_inputs):
    """A Distill λ graph; without ``new_inputs`` it is an API prompt of the node before objective/fit_schedule existed
    (it must still validate and run)."""
    graph = base_graph(batch)
    graph["5"] = {"class_type": "DODEDistillLambdas", "inputs": {
        "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "seed": 11,
        "cfg": CFG, "sampler_name": sampler, "scheduler": SCHEDULER, "steps": steps, "denoise": 1.0,
        "teacher": "heun", "scale": scale, "save": True, **new_inputs}}
    graph["9"] = {"class_type": "SaveLatent", "inputs": {"samples": ["5", 2], "filename_prefix": prefix}}
    return graph


def combo_options(spec):
    """The options of a combo input as /object_info lists it (V1: [list, {...}]; V3: ["COMBO", {"options": ...}])."""
    if isinstance(spec[0], list):
        return spec[0]
    return spec[1]["options"]


def test_pack_loads_without_import_failure(server):
    log = server.log()
    failed = [line for line in log.splitlines() if "IMPORT FAILED" in line or "Cannot import" in line]
    assert not [line for line in failed if "custom_nodes/dode" in line or "dode_e2e_cond" in line], failed
    names = ", ".join(f"{n}_dode" for n in solver_names())
    assert f"[dode] D-ODE: samplers {names}, {len(DODE_NODES)} nodes (sampling/dode), scheduler dode" in log


def test_object_info_lists_nodes_and_dropdown_names(server):
    info = server.get("/object_info")
    for node in DODE_NODES:
        assert node in info, node
        assert info[node]["category"] == "sampling/dode"
    names = [f"{n}_dode" for n in solver_names()]
    for node in ("KSampler", "KSamplerAdvanced", "KSamplerSelect"):
        options = combo_options(info[node]["input"]["required"]["sampler_name"])
        assert all(n in options for n in names), (node, options[-8:])
    for node, section in (("KSampler", "required"), ("KSamplerAdvanced", "required"), ("BasicScheduler", "required")):
        options = combo_options(info[node]["input"][section]["scheduler"])
        assert options.count("dode") == 1, (node, options)
    # Distill λ fits a stock scheduler's grid: its list is the stock schedulers, without 'dode'
    assert "dode" not in combo_options(info["DODEDistillLambdas"]["input"]["required"]["scheduler"])
    distill_info = info["DODEDistillLambdas"]
    # new outputs last (links are by index): the λ chart, the grid to sample with, the model with the fit attached
    assert distill_info["output"] == ["SAMPLER", "DODE_LAMBDAS", "LATENT", "STRING", "IMAGE", "SIGMAS", "MODEL"]
    assert {"objective", "fit_schedule", "sigmas"} <= set(distill_info["input"]["optional"])
    assert distill_info["input"]["required"]["cfg"][1]["default"] == info["KSampler"]["input"]["required"]["cfg"][1][
        "default"]
    for node in DODE_NODES:  # every input says what it is for
        for section in ("required", "optional"):
            for name, spec in info[node]["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), (node, name)
    assert distill_info["input"]["required"]["denoise"][1]["min"] > 0
    # the frontend extension (toasts, Distill λ's report) is served from the pack's WEB_DIRECTORY
    assert "/extensions/dode/dode.js" in server.get("/extensions")
    with urllib.request.urlopen(server.url + "/extensions/dode/dode.js", timeout=60) as r:
        assert b'api.addEventListener("dode.status"' in r.read()


def custom_sampler(sampler_node, seed, prefix):
    """SamplerCustom with ``sampler_node`` (a node dict returning SAMPLER) on the KSampler σ grid."""
    graph = base_graph()
    graph["7"] = sampler_node
    graph["8"] = {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": SCHEDULER,
                                                              "steps": STEPS, "denoise": 1.0}}
    graph["5"] = {"class_type": "SamplerCustom", "inputs": {
        "model": ["1", 0], "add_noise": True, "noise_seed": seed, "cfg": CFG, "positive": ["2", 0],
        "negative": ["3", 0], "sampler": ["7", 0], "sigmas": ["8", 0], "latent_image": ["4", 0]}}
    graph["9"] = {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": prefix}}
    return graph


# How ComfyUI runs each D-ODE solver's stock counterpart (λ = 0 must reproduce it bit for bit).
STOCK = {"dpmpp_2s": {"class_type": "SamplerDPMPP_2S_Ancestral", "inputs": {"eta": 0.0, "s_noise": 1.0}},
         "dpmpp_3m": {"class_type": "SamplerDPMPP_3M_SDE",
                      "inputs": {"eta": 0.0, "s_noise": 1.0, "noise_device": "cpu"}}}

def solver_names():
    from dode import SAMPLER_NAMES
    return list(SAMPLER_NAMES)


def as_eps(graph):
    """The same tiny model re-parameterized as an eps (SD1-style, σ up to 14.6) model by ModelSamplingDiscrete."""
    graph["20"] = {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["1", 0], "sampling": "eps",
                                                                     "zsnr": False}}
    for node in graph.values():
        for key, value in node["inputs"].items():
            if value == ["1", 0] and node is not graph["20"]:
                node["inputs"][key] = ["20", 0]
    return graph


@pytest.mark.parametrize("kind", ["flow", "eps"])
@pytest.mark.parametrize("name", solver_names())
def test_dode_without_lambdas_is_bit_identical_to_stock(server, name, kind):
    wrap = as_eps if kind == "eps" else (lambda graph: graph)
    if name in STOCK:
        stock = server.latent(server.run(wrap(custom_sampler(STOCK[name], 5, f"stock_{name}_{kind}"))))
    else:
        options = combo_options(server.get("/object_info/KSampler")["KSampler"]["input"]["required"]["sampler_name"])
        if name not in options:
            pytest.skip(f"ComfyUI has no stock sampler {name!r} to compare with")
        stock = server.latent(server.run(wrap(ksampler(name, 5, f"stock_{name}_{kind}"))))
    dode = server.latent(server.run(wrap(ksampler(f"{name}_dode", 5, f"dode0_{name}_{kind}"))))
    assert stock.shape == (1, 16, 8, 8)
    assert torch.equal(stock, dode), f"{name}_dode without λ differs from {name}: {(stock - dode).abs().max()}"
    assert f"[dode] {name}_dode: stock {name} (λ = 0): no λ for" in server.log()


def test_distill_writes_lambdas_and_ksampler_uses_them(server):
    from dode import load_lambdas
    before = server.lambda_files()
    graph = distill("euler", "teacher_euler")
    graph["10"] = {"class_type": "SaveImage", "inputs": {"images": ["5", 4], "filename_prefix": "lambda_plot"}}
    entry = server.run(graph, timeout=600)
    teacher = server.latent(entry)
    assert teacher.shape == (2, 16, 8, 8) and torch.isfinite(teacher).all()
    # the λ chart (IMAGE output 4) went through SaveImage: an RGB PNG of the chart's size, with ink on white
    from PIL import Image
    info = entry["outputs"]["10"]["images"][0]
    with Image.open(server.base / "output" / info.get("subfolder", "") / info["filename"]) as png:
        assert png.size == (480, 300) and png.mode == "RGB"
        assert min(lo for lo, _ in png.getextrema()) < 128 and max(hi for _, hi in png.getextrema()) == 255
    log = server.log()
    assert "could not draw the λ chart" not in log and "previews are off" not in log
    files = server.lambda_files()
    new = [f for f in files if f not in before]
    assert len(new) == 1 and new[0].name.endswith("-euler.safetensors"), files
    assert new[0].name.startswith("tiny_mmdit-")  # named after the UNETLoader's file (v0.3.x records none)
    (fit,) = load_lambdas(new[0])
    assert fit.sampler == "euler" and fit.steps == STEPS and fit.cfg == CFG
    assert fit.model.startswith("fp1-") and fit.lambdas.abs().sum() > 0
    # where ComfyUI records the model's file, the bare model's entry also carries the file's AutoV2 (WebUI identity)
    autov2 = hashlib.sha256((server.base / "models" / "diffusion_models" / MODEL).read_bytes()).hexdigest()[:10]
    assert fit.aliases == ([autov2] if fit.metrics["model_base"].startswith("file:") else []), fit.metrics
    assert not list((server.base / "models" / "dode_lambdas").glob(".dode-*"))  # no temp file left behind

    # a new seed, so ComfyUI's cache does not answer; stock euler vs euler_dode (which now finds λ in the store)
    stock = server.latent(server.run(ksampler("euler", 7, "stock_euler_7")))
    dode = server.latent(server.run(ksampler("euler_dode", 7, "dode_euler_7")))
    assert not torch.equal(stock, dode)
    assert (stock - dode).abs().max() > 1e-5
    assert "[dode] euler_dode: λ from" in server.log()

    # the same λ through Load λ → D-ODE Sampler → SamplerCustom gives exactly the KSampler result
    graph = custom_sampler({"class_type": "DODESampler", "inputs": {
        "sampler_name": "euler", "lambda_file": "(λ store lookup)", "strict": True, "lambdas": ["6", 0]}}, 7, "custom")
    graph["6"] = {"class_type": "DODELoadLambdas", "inputs": {"lambda_file": new[0].name}}
    assert torch.equal(server.latent(server.run(graph)), dode)
    # and through the file picker of D-ODE Sampler
    graph = custom_sampler({"class_type": "DODESampler", "inputs": {
        "sampler_name": "euler", "lambda_file": new[0].name, "strict": True}}, 7, "custom_file")
    assert torch.equal(server.latent(server.run(graph)), dode)

    # rewriting the λ file invalidates ComfyUI's cache for the nodes that read it (fingerprint_inputs / IS_CHANGED)
    from dode import LambdaEntry, save_lambdas
    save_lambdas(new[0], [LambdaEntry(**{**fit.__dict__, "lambdas": fit.lambdas * 0.5})])
    graph["9"]["inputs"]["filename_prefix"] = "custom_file_rewritten"
    rewritten = server.latent(server.run(graph))
    assert not torch.equal(rewritten, dode)


def test_distill_sends_previews_on_one_progress_bar(server, tmp_path):
    """Over the websocket (a client run with ComfyUI's Python, which has aiohttp): Distill λ's node gets one progress
    bar over teacher, stock and student, rising to its end, and latent previews (binary messages) while it runs."""
    graph = distill("dpmpp_2m", "previews", steps=3, scale=2, objective="greedy")
    graph["5"]["inputs"].update(seed=31, save=False)
    seen = watch(server, graph, tmp_path)
    bar = [(value, total) for node, value, total in seen["progress"] if node == "5"]
    teacher, stock, student = 3 * 2, 3, 3
    assert {total for _, total in bar} == {teacher + stock + student}, bar
    assert [v for v, _ in bar] == sorted(v for v, _ in bar) and bar[-1][0] == teacher + stock + student
    assert seen["binary"], "no preview images were sent while distilling"
    assert "previews are off" not in server.log()


def watch(server, graph, tmp_path, name="prompt.json"):
    """Runs ``graph`` through ws_watch.py (ComfyUI's Python): what the websocket sent for it."""
    prompt_file = tmp_path / name
    prompt_file.write_text(json.dumps(graph))
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    done = subprocess.run([python, str(SUPPORT / "ws_watch.py"), server.url, str(prompt_file)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["error"] is None, seen["error"]
    return seen


def test_dode_scheduler_serves_the_fitted_schedule_else_simple(server):
    from dode import load_lambdas
    # no fit yet for dpmpp_2m: the dode scheduler is the simple scheduler, bit for bit, and says so
    fallback = server.latent(server.run(ksampler("dpmpp_2m_dode", 41, "sched_fallback", scheduler="dode")))
    simple = server.latent(server.run(ksampler("dpmpp_2m_dode", 41, "sched_simple", scheduler="simple")))
    assert torch.equal(fallback, simple)
    assert "dode scheduler: no fitted schedule for" in server.log() and "using the stock 'simple' scheduler" in \
        server.log()

    # Distill λ with fit_schedule, and in the same prompt SamplerCustom fed by its SIGMAS and SAMPLER
    before = server.lambda_files()
    graph = distill("dpmpp_2m", "fitted_teacher", scale=4, objective="final", fit_schedule=True)
    graph["6"] = {"class_type": "SamplerCustom", "inputs": {
        "model": ["1", 0], "add_noise": True, "noise_seed": 43, "cfg": CFG, "positive": ["2", 0],
        "negative": ["3", 0], "sampler": ["5", 0], "sigmas": ["5", 5], "latent_image": ["7", 0]}}
    graph["7"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    graph["10"] = {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "fitted_custom"}}
    custom = server.latent(server.run(graph, timeout=900), node="10")
    (path,) = [f for f in server.lambda_files() if f not in before]
    fitted = [e for e in load_lambdas(path) if e.schedule == "fitted"]
    assert len(fitted) == 1 and fitted[0].objective == "final" and fitted[0].steps == STEPS and fitted[0].cfg == CFG
    assert fitted[0].sigmas[-1] == 0 and fitted[0].sigmas[0] == pytest.approx(1.0, rel=1e-5)  # flow: σ_max = 1

    # the stock KSampler, dpmpp_2m_dode on the dode scheduler: the fitted grid with its λ (= SamplerCustom above)
    log_before = len(server.log())
    dode = server.latent(server.run(ksampler("dpmpp_2m_dode", 43, "sched_fitted", scheduler="dode")))
    log = server.log()[log_before:]
    assert "dode scheduler: fitted σ grid from" in log and "dpmpp_2m_dode: λ from" in log
    assert "(fitted schedule)" in log
    assert torch.equal(dode, custom)
    stock = server.latent(server.run(ksampler("dpmpp_2m", 43, "sched_stock", scheduler="simple")))
    assert (dode - stock).abs().max() > 1e-4
    # a plain sampler on the dode scheduler gets the fitted grid (no λ): neither stock nor the D-ODE result
    plain = server.latent(server.run(ksampler("dpmpp_2m", 43, "sched_plain", scheduler="dode")))
    assert not torch.equal(plain, stock) and not torch.equal(plain, dode)


def test_model_output_reruns_after_a_new_distill(server):
    """KSampler fed by Distill λ's MODEL: the fit travels in model_options, so a new distillation re-runs the
    KSampler (same seed, unchanged KSampler) with the new λ instead of returning a cached latent."""
    def graph(distill_seed):
        g = distill("ipndm", "model_path_teacher", scale=2, objective="greedy")
        g["5"]["inputs"].update(seed=distill_seed, save=False)
        g["6"] = {"class_type": "KSampler", "inputs": {
            "model": ["5", 6], "seed": 7, "steps": STEPS, "cfg": CFG, "sampler_name": "ipndm_dode",
            "scheduler": SCHEDULER, "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["7", 0],
            "denoise": 1.0}}
        g["7"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
        g["10"] = {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "model_path"}}
        return g

    first = server.latent(server.run(graph(11)), node="10")
    assert "ipndm_dode: λ from Distill λ (ipndm, 4 steps)" in server.log()
    second = server.latent(server.run(graph(12)), node="10")
    assert not torch.equal(first, second)
    stock = server.latent(server.run(ksampler("ipndm", 7, "model_path_stock")))
    assert not torch.equal(first, stock)


def test_feedback_reaches_the_browser(server, tmp_path):
    """The pack's dode.status messages arrive on the websocket: what a *_dode run did, the λ files it skipped;
    Distill λ's report is a UI output of its node (shown on the node by web/dode.js)."""
    folder = server.base / "models" / "dode_lambdas"
    folder.mkdir(parents=True, exist_ok=True)
    bad = folder / "broken_download.safetensors"
    bad.write_bytes(b"not a safetensors file")
    try:
        seen = watch(server, ksampler("heun_dode", 51, "ws_heun"), tmp_path)
    finally:
        bad.unlink()
    texts = [m["text"] for m in seen["dode"]]
    assert any(t.startswith("heun_dode: stock heun (λ = 0): no λ for") for t in texts), texts
    assert any("skipped the λ file broken_download.safetensors" in t for t in texts), texts
    assert "broken_download.safetensors" in server.log()

    graph = distill("euler", "ws_distill", steps=2, scale=2, objective="greedy")
    graph["5"]["inputs"].update(seed=53, save=False)
    seen = watch(server, graph, tmp_path, "distill.json")
    (report,) = seen["executed"]["5"]["text"]
    assert report.startswith("D-ODE euler: euler, 2 steps") and "λ:" in report and "σ:" in report
    assert any(m["text"].startswith("Distill λ: euler, 2 steps") for m in seen["dode"]), seen["dode"]


def test_unknown_combo_values_fail_validation(server):
    """ComfyUI v0.3.64 does not check COMBO values of V3 nodes; the pack's validate_inputs does (HTTP 400 at queueing,
    naming the input), and Distill λ refuses the dode scheduler as the grid to start from."""
    for scheduler, message in (("no_such_scheduler", "scheduler: 'no_such_scheduler' is not one of"),
                               ("dode", "Distill λ fits a stock scheduler")):
        graph = distill("euler", "bad_combo")
        graph["5"]["inputs"]["scheduler"] = scheduler
        req = urllib.request.Request(server.url + "/prompt", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"prompt": graph, "client_id": "dode-e2e"}).encode())
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(req, timeout=60)
        assert error.value.code == 400
        body = error.value.read().decode()
        assert message in json.loads(body)["node_errors"]["5"]["errors"][0]["details"], body


@pytest.mark.skipif(not CHROMIUM, reason="set DODE_E2E_CHROMIUM to a Chromium binary (with ComfyUI's frontend "
                                         "package installed) to check what the browser shows")
def test_the_browser_shows_toasts_and_the_report(server, tmp_path):
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
        graph = distill("euler", "browser_teacher", steps=2, scale=2, objective="greedy")
        graph["5"]["inputs"].update(seed=61, save=False)
        graph["6"] = {"class_type": "KSampler", "inputs": {
            "model": ["5", 6], "seed": 62, "steps": 2, "cfg": CFG, "sampler_name": "euler_dode",
            "scheduler": SCHEDULER, "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "denoise": 1.0}}
        graph["10"] = {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "browser"}}
        prompt_file, shot = tmp_path / "browser.json", tmp_path / "browser.png"
        prompt_file.write_text(json.dumps(graph))
        python = os.environ.get("COMFYUI_PYTHON", sys.executable)
        done = subprocess.run([python, str(SUPPORT / "browser_check.py"), server.url + "/", devtools,
                               str(prompt_file), str(shot)], capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        seen = json.loads(done.stdout.strip().splitlines()[-1])
        if os.environ.get("DODE_E2E_KEEP"):
            shutil.copy(shot, os.environ["DODE_E2E_KEEP"] + ".png")
    finally:
        chrome.terminate()
        chrome.wait(timeout=30)
    assert seen["error"] is None, seen
    assert seen["report"].startswith("D-ODE euler: euler, 2 steps") and "λ:" in seen["report"]
    assert any("Distill λ: euler, 2 steps" in t for t in seen["toasts"]), seen["toasts"]
    assert any("euler_dode: λ from Distill λ (euler, 2 steps)" in t for t in seen["toasts"]), seen["toasts"]


def test_dual_cfg_guider_runs_stock_and_says_why(server):
    """Guider_DualCFG keeps .cfg = 1 and has two scales: a *_dode sampler under it looks up no λ (it would be keyed
    cfg 1), runs ComfyUI's stock sampler and says so."""
    def graph(sampler_node, prefix):
        g = base_graph()
        g["6"] = {"class_type": "DualCFGGuider", "inputs": {
            "model": ["1", 0], "cond1": ["2", 0], "cond2": ["2", 0], "negative": ["3", 0], "cfg_conds": 3.0,
            "cfg_cond2_negative": 2.0, "style": "regular"}}
        g["7"] = sampler_node
        g["8"] = {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": SCHEDULER,
                                                              "steps": STEPS, "denoise": 1.0}}
        g["10"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 71}}
        g["5"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["10", 0], "guider": ["6", 0], "sampler": ["7", 0], "sigmas": ["8", 0], "latent_image": ["4", 0]}}
        g["9"] = {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": prefix}}
        return g

    select = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler_dode"}}
    dode = server.latent(server.run(graph(select, "dual_dode")))
    stock = server.latent(server.run(graph({"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
                                           "dual_stock")))
    assert torch.equal(dode, stock)
    assert "Guider_DualCFG has two CFG scales (cfg1 3, cfg2 2)" in server.log()


def test_model_options_error_and_auto_distill(server):
    graph = ksampler("dpmpp_2m_dode", 21, "strict", model=("10", 0))
    graph["10"] = {"class_type": "DODEModelOptions", "inputs": {
        "model": ["1", 0], "on_missing": "error", "identity": "full", "teacher": "heun", "scale": 2}}
    entry = server.wait(server.queue(graph))
    assert entry["status"]["status_str"] == "error"
    assert "no λ for" in json.dumps(entry["status"]["messages"], ensure_ascii=False)

    before = {f.name for f in server.lambda_files()}
    graph = ksampler("heun_dode", 22, "auto", model=("10", 0))
    graph["10"] = {"class_type": "DODEModelOptions", "inputs": {
        "model": ["1", 0], "on_missing": "auto_distill", "identity": "full", "teacher": "heun", "scale": 2}}
    server.run(graph, timeout=600)
    new = [f for f in server.lambda_files() if f.name not in before]
    assert len(new) == 1 and new[0].name.endswith("-heun.safetensors")
    assert "auto-distilling" in server.log()


def test_interrupted_distill_leaves_no_file(server):
    before = {f.name for f in server.lambda_files()}
    prompt_id = server.queue(distill("dpmpp_2m", "interrupted", steps=40, scale=50, batch=1))
    end = time.time() + 120
    while time.time() < end:  # wait until it is running, then interrupt
        if server.get("/queue")["queue_running"]:
            break
        time.sleep(0.1)
    time.sleep(2.0)
    server.post("/interrupt", {})
    entry = server.wait(prompt_id, timeout=300)
    assert entry["status"]["status_str"] == "error"
    assert "interrupt" in json.dumps(entry["status"]["messages"], ensure_ascii=False).lower()
    assert {f.name for f in server.lambda_files()} == before
    folder = server.base / "models" / "dode_lambdas"
    assert not list(folder.glob(".dode-*"))


WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # nodes the frontend keeps out of the prompt
MISSING = object()


def workflow_to_prompt(workflow, object_info):
    """A saved (UI) workflow as an API prompt, mapping widgets_values the way the frontend does."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        info = object_info[node["type"]]
        linked = {i["name"]: links[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}
        inputs = {name: [str(link[1]), link[2]] for name, link in linked.items()}
        values = iter(node.get("widgets_values", []))
        for section in ("required", "optional"):
            for name in info.get("input_order", {}).get(section, []):
                spec = info["input"][section][name]
                kind = "COMBO" if isinstance(spec[0], list) else spec[0]
                if name in linked or kind not in WIDGET_TYPES:
                    continue
                opts = spec[1] if len(spec) > 1 else {}
                value = next(values, MISSING)
                if value is MISSING:  # a workflow saved before this input existed: the frontend keeps the default
                    assert section == "optional" and "default" in opts, f"{node['type']}: no value for {name}"
                    inputs[name] = opts["default"]
                    continue
                inputs[name] = value
                if kind == "INT" and (opts.get("control_after_generate") or name in ("seed", "noise_seed")):
                    next(values)  # the frontend's "control after generate" widget
        assert next(values, None) is None, f"{node['type']}: more widget values than widgets"
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "example_workflows").glob("*.json")))
def test_example_workflow_validates(server, name):
    workflow = json.loads((ROOT / "example_workflows" / name).read_text())
    ckpts = {n["widgets_values"][0] for n in workflow["nodes"] if n["type"] == "CheckpointLoaderSimple"}
    folder = server.base / "models" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    for ckpt in ckpts:  # a placeholder, so that validation passes; execution then fails at loading it
        (folder / ckpt).write_bytes(b"")
    prompt = workflow_to_prompt(workflow, server.get("/object_info"))
    answer = server.post("/prompt", {"prompt": prompt, "client_id": "dode-e2e"})
    assert answer.get("node_errors") == {}, answer
    entry = server.wait(answer["prompt_id"])
    assert entry["status"]["status_str"] == "error"  # the placeholder checkpoint cannot load
    messages = json.dumps(entry["status"]["messages"], ensure_ascii=False)
    assert "CheckpointLoaderSimple" in messages, messages[-2000:]
