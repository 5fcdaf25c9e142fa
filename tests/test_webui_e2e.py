"""End-to-end: a real WebUI (A1111 1.10.x or Forge) started headless on CPU with this repo as an extension.

Skipped unless WEBUI_DIR points at a WebUI checkout whose environment is installed (see docs/webui.md, "Testing").
- WEBUI_PYTHON: the WebUI's python (default: WEBUI_DIR/venv/bin/python, else this python);
- WEBUI_ARGS: extra launch flags (default: A1111's CPU flags; Forge: "--always-cpu --skip-torch-cuda-test
  --skip-version-check");
- WEBUI_E2E_TXT2IMG=1: also loads a checkpoint and runs generations: txt2img and img2img with auto-distill and
  reuse, the schedule type "D-ODE fitted" (fallback, auto-distill with fit_schedule, reuse, a stock sampler on it, an
  X/Y/Z plot over schedule types) at batch sizes 1 and 2. The checkpoint is WEBUI_CKPT, else a randomly initialised
  SD1.5 checkpoint this test builds with the WebUI's own ldm/transformers classes (seeded; the zero-initialised output
  layers are made non-zero so that the network's output depends on its input: A1111's test/test_files/empty.pt is
  all zeros, every sampler then gives the same image and no fit can show anything). A1111 builds its CLIP text
  encoder from the local folder openai/clip-vit-large-patch14/ in its working directory; offline, this test writes
  one there (tokenizer files made from the BPE table that open_clip ships in the WebUI's environment, and a ViT-L/14
  config), unless WEBUI_CLIP_DIR names a working directory that already has it.

The WebUI runs with --data-dir in a temporary folder whose extensions/ links to this repo, so WEBUI_DIR is not
modified. The samplers must appear in /sdapi/v1/samplers, "D-ODE fitted" in /sdapi/v1/schedulers, and the settings
must be accepted by /sdapi/v1/options.
"""
import contextlib
import gzip
import importlib
import importlib.machinery
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEBUI_DIR = os.environ.get("WEBUI_DIR")
pytestmark = pytest.mark.skipif(not WEBUI_DIR, reason="set WEBUI_DIR to a WebUI checkout to run the e2e test")
DEFAULT_ARGS = "--use-cpu all --skip-torch-cuda-test --no-half --skip-version-check"
START_TIMEOUT = float(os.environ.get("WEBUI_START_TIMEOUT", "300"))


def core_package(name="_dode_e2e"):
    """This repo as a bare package (as scripts/dode_webui.py loads it), with samplers, lambdas and webui imported."""
    if name not in sys.modules:
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [ROOT]
        pkg = types.ModuleType(name)
        pkg.__spec__, pkg.__path__, pkg.__package__ = spec, [ROOT], name
        sys.modules[name] = pkg
    for sub in ("samplers", "lambdas", "webui"):
        importlib.import_module(f"{name}.{sub}")
    return sys.modules[name]


def expected_labels():
    """The labels the adapter registers, computed by the adapter itself (loaded without any WebUI module)."""
    return core_package().webui.labels()


def byte_chars():
    """The byte-to-character table of CLIP's BPE (printable bytes map to themselves, the rest above 255)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + k) for k in range(len(rest))]


def write_clip_folder(cwd, python):
    """openai/clip-vit-large-patch14/ (tokenizer + config, no weights) under ``cwd``, built offline."""
    folder = os.path.join(cwd, "openai", "clip-vit-large-patch14")
    os.makedirs(folder, exist_ok=True)
    where = subprocess.run([python, "-c", "import open_clip, os; print(os.path.dirname(open_clip.__file__))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    with gzip.open(os.path.join(where, "bpe_simple_vocab_16e6.txt.gz"), "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1:49152 - 256 - 2 + 1]
    chars = byte_chars()
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges] + \
        ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == 49408
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(tokens)}, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>"}
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({**special, "model_max_length": 77, "do_lower_case": True, "tokenizer_class": "CLIPTokenizer"}, f)
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump(special, f)
    text = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
            "max_position_embeddings": 77, "vocab_size": 49408, "hidden_act": "quick_gelu", "projection_dim": 768,
            "layer_norm_eps": 1e-5, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1}
    vision = {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 24,
              "patch_size": 14, "image_size": 224, "projection_dim": 768, "hidden_act": "quick_gelu"}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"model_type": "clip", "architectures": ["CLIPModel"], "projection_dim": 768,
                   "text_config": text, "vision_config": vision}, f)


RANDOM_CHECKPOINT = r"""
import sys
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel
webui, config, out = sys.argv[1:4]
sys.path.insert(0, webui + "/repositories/stable-diffusion-stability-ai")
from ldm.util import instantiate_from_config
torch.manual_seed(0)
config = OmegaConf.load(config).model.params
parts = {"model.diffusion_model.": instantiate_from_config(config.unet_config),
         "first_stage_model.": instantiate_from_config(config.first_stage_config),
         "cond_stage_model.transformer.": CLIPTextModel(CLIPTextConfig(  # CLIP ViT-L/14's text tower
             hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
             max_position_embeddings=77, vocab_size=49408, projection_dim=768, hidden_act="quick_gelu"))}
state = {}
for prefix, module in parts.items():
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().float()
        if name.endswith("weight") and tensor.ndim > 1 and not tensor.any():  # zero_module() layers
            tensor = torch.randn(tensor.shape) / tensor[0].numel() ** 0.5
        state[prefix + name] = tensor.half().contiguous() if tensor.is_floating_point() else tensor.contiguous()
save_file(state, out)
"""


def tiny_sd1_config():
    """An SD1-family LatentDiffusion config (SD1.5's noise schedule, latent format, CLIP ViT-L/14 text encoder) with a
    small UNet and VAE, so that a CPU generation takes seconds. The WebUI uses ``<checkpoint stem>.yaml`` next to a
    checkpoint as its config."""
    unet = {"image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 32, "attention_resolutions": [1],
            "num_res_blocks": 1, "channel_mult": [1, 2], "num_heads": 2, "use_spatial_transformer": True,
            "transformer_depth": 1, "context_dim": 768, "use_checkpoint": False, "legacy": False}
    vae = {"embed_dim": 4, "monitor": "val/rec_loss", "lossconfig": {"target": "torch.nn.Identity"},
           "ddconfig": {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 32,
                        "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}}
    return {"model": {"base_learning_rate": 1e-4, "target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": {
        "linear_start": 0.00085, "linear_end": 0.012, "num_timesteps_cond": 1, "log_every_t": 200, "timesteps": 1000,
        "first_stage_key": "jpg", "cond_stage_key": "txt", "image_size": 64, "channels": 4,
        "cond_stage_trainable": False, "conditioning_key": "crossattn", "monitor": "val/loss_simple_ema",
        "scale_factor": 0.18215, "use_ema": False,
        "unet_config": {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": unet},
        "first_stage_config": {"target": "ldm.models.autoencoder.AutoencoderKL", "params": vae},
        "cond_stage_config": {"target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder"}}}}


def write_random_checkpoint(path, webui, python, tiny=True):
    """A seeded, randomly initialised SD1 checkpoint (fp16 safetensors) at ``path``: SD1.5's architecture (~2 GB), or
    with ``tiny`` a small UNet and VAE whose config goes next to it (``<stem>.yaml``, JSON being YAML)."""
    config = os.path.join(webui, "configs", "v1-inference.yaml")
    if tiny:
        config = os.path.splitext(str(path))[0] + ".yaml"
        with open(config, "w") as f:
            json.dump(tiny_sd1_config(), f)
    subprocess.run([python, "-c", RANDOM_CHECKPOINT, webui, config, str(path)], check=True, capture_output=True,
                   text=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url, payload=None, timeout=30):
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def webui_python(webui_dir):
    """The WebUI's python: WEBUI_PYTHON, else its venv's, else this one."""
    return os.environ.get("WEBUI_PYTHON") or next(
        (p for p in (os.path.join(webui_dir, "venv", "bin", "python"),) if os.path.exists(p)), sys.executable)


def linked_data_dir(tmp_path_factory, name):
    """A temporary --data-dir whose extensions/dode links to this repository."""
    data = tmp_path_factory.mktemp(name)
    (data / "extensions").mkdir()
    os.symlink(ROOT, data / "extensions" / "dode")
    return data


def add_dummy_checkpoint(data, core):
    """models/Stable-diffusion/e2e.ckpt (listed, never loaded) and a real λ sidecar beside it."""
    checkpoints = data / "models" / "Stable-diffusion"
    checkpoints.mkdir(parents=True)
    (checkpoints / "e2e.ckpt").write_bytes(b"listed, never loaded")
    entry = core.lambdas.LambdaEntry(sampler="euler", sigmas=[14.6, 3.0, 0.5, 0.0], lambdas=[0.0, 0.1, 0.1],
                                     model="e2e")
    core.lambdas.save_lambdas(checkpoints / "e2e.dode.safetensors", [entry])


@contextlib.contextmanager
def running_webui(args, cwd, log_path, url):
    """The WebUI started with ``args`` in its own process group (output to ``log_path``), once ``url`` answers;
    stopped, with its whole process group, when the block ends."""
    log = open(log_path, "w")
    proc = subprocess.Popen(args, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the WebUI exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the WebUI did not answer in {START_TIMEOUT:.0f} s:\n{log_path.read_text()[-4000:]}")
            time.sleep(2)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the process group of the WebUI started above
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    webui = os.path.abspath(WEBUI_DIR)
    python = webui_python(webui)
    data = linked_data_dir(tmp_path_factory, "webui-data")
    add_dummy_checkpoint(data, core_package())
    port = free_port()
    args = [python, os.path.join(webui, "launch.py"), "--skip-prepare-environment", "--api", "--nowebui",
            "--skip-load-model-at-start", "--no-download-sd-model", "--port", str(port), "--data-dir", str(data),
            *shlex.split(os.environ.get("WEBUI_ARGS", DEFAULT_ARGS))]
    txt2img = os.environ.get("WEBUI_E2E_TXT2IMG") == "1"
    if txt2img:
        ckpt = os.environ.get("WEBUI_CKPT")
        if not ckpt:
            tiny = os.environ.get("WEBUI_E2E_MODEL", "tiny") == "tiny"
            ckpt = tmp_path_factory.mktemp("webui-ckpt") / f"random-{'tiny' if tiny else 'sd15'}.safetensors"
            write_random_checkpoint(ckpt, webui, python, tiny)
        args += ["--ckpt", str(ckpt), "--do-not-download-clip", "--disable-nan-check"]
    cwd = os.environ.get("WEBUI_CLIP_DIR") or str(data)  # transformers finds openai/clip-vit-large-patch14 in cwd
    if txt2img and not os.environ.get("WEBUI_CLIP_DIR"):
        write_clip_folder(cwd, python)
    base = f"http://127.0.0.1:{port}"
    log_path = data / "webui.log"
    with running_webui(args, cwd, log_path, base + "/sdapi/v1/samplers"):
        yield types.SimpleNamespace(base=base, data=data, log=log_path, txt2img=txt2img)


def test_samplers_are_listed(server):
    samplers = {s["name"]: s for s in request(server.base + "/sdapi/v1/samplers")}
    labels = expected_labels()
    assert {"Euler (D-ODE)", "Heun (D-ODE)", "DPM++ 2M (D-ODE)"} <= set(labels)
    missing = [label for label in labels if label not in samplers]
    assert not missing, f"not in /sdapi/v1/samplers: {missing}\n{server.log.read_text()[-3000:]}"
    for label in labels:
        assert samplers[label]["aliases"] == []  # the API would run DPM++ 2M for an alias
    assert str(samplers["Heun (D-ODE)"]["options"].get("second_order")) == "True"
    assert "Error loading script: dode_webui.py" not in server.log.read_text()


def test_settings_are_registered(server):
    # GET /sdapi/v1/options only lists the options known when the API module was imported (its pydantic model), so
    # settings added through on_ui_settings are checked by setting them: an unknown key fails in opts.set.
    request(server.base + "/sdapi/v1/options", {"dode_scale": 3, "dode_miss_policy": "stock sampler, log once"})
    with pytest.raises(urllib.error.HTTPError):
        request(server.base + "/sdapi/v1/options", {"dode_no_such_option": 1})
    request(server.base + "/sdapi/v1/options", {"dode_scale": 10})


def test_sidecars_are_not_listed_as_checkpoints(server):
    names = [m["filename"] for m in request(server.base + "/sdapi/v1/sd-models")]
    assert any(n.endswith("e2e.ckpt") for n in names) and not any(n.endswith(".dode.safetensors") for n in names)
    damaged = server.data / "models" / "Stable-diffusion" / "damaged.dode.safetensors"
    damaged.write_bytes(b"garbage, not a safetensors file")
    try:
        request(server.base + "/sdapi/v1/refresh-checkpoints", {})
        names = [m["filename"] for m in request(server.base + "/sdapi/v1/sd-models")]
        assert not any(n.endswith(".dode.safetensors") for n in names)  # (reForge renames the dummy e2e.ckpt it
        # loads at start whatever the flags say, so only the sidecars are checked after the refresh)
        assert "damaged.dode.safetensors" not in server.log.read_text()  # the scan never opened it (no traceback)
    finally:
        damaged.unlink()


def test_the_lambda_files_route_lists_and_removes_an_entry(server):
    folder = server.data / "models" / "D-ODE"
    folder.mkdir(parents=True, exist_ok=True)
    core = core_package()
    sigmas = core.samplers.karras_sigmas(4)
    path = folder / "listed.safetensors"
    entry = core.lambdas.LambdaEntry(sampler="heun", sigmas=sigmas, lambdas=[0.1] * core.samplers.nfe("heun", sigmas),
                                     model="0123456789", cfg=3.0)
    core.lambdas.save_lambdas(path, [entry])
    rows = [r for r in request(server.base + "/dode/v1/lambdas")["rows"] if r["file"] == "listed.safetensors"]
    assert [r["title"] for r in rows] == ["heun, 4 steps, cfg 3"]
    removed = request(server.base + "/dode/v1/lambdas/remove", {"file": "listed.safetensors", "id": rows[0]["id"]})
    assert removed["left"] == 0 and not path.exists()
    with pytest.raises(urllib.error.HTTPError) as refused:
        request(server.base + "/dode/v1/lambdas/remove", {"file": "listed.safetensors", "id": rows[0]["id"]})
    assert refused.value.code == 400 and b"no \xce\xbb file" in refused.value.read()


def test_txt2img_auto_distills_then_reuses(server):
    if not server.txt2img:
        pytest.skip("set WEBUI_E2E_TXT2IMG=1 to run generations")
    payload = {"prompt": "a photo of a cat", "sampler_name": "Euler (D-ODE)", "scheduler": "Karras", "steps": 4,
               "width": 64, "height": 64, "cfg_scale": 5, "seed": 1,
               "override_settings": {"dode_auto_distill": True, "dode_scale": 2, "dode_objective": "greedy"},
               "override_settings_restore_afterwards": False}
    first = json.loads(request(server.base + "/sdapi/v1/txt2img", payload, timeout=900)["info"])
    text = first["infotexts"][0]
    assert "Sampler: Euler (D-ODE)" in text and "D-ODE λ: " in text and "D-ODE fit: " in text, text
    files = list((server.data / "models" / "D-ODE").glob("*.dode.safetensors"))
    assert len(files) == 1 and first["sd_model_hash"] in files[0].name
    second = json.loads(request(server.base + "/sdapi/v1/txt2img", payload, timeout=900)["info"])
    text2 = second["infotexts"][0]
    assert f"D-ODE λ: {files[0].name}#0" in text2 and "D-ODE fit" not in text2, text2
    img2img = {**payload, "init_images": [first_image(server, payload)], "denoising_strength": 0.5}
    tail = json.loads(request(server.base + "/sdapi/v1/img2img", img2img, timeout=900)["info"])["infotexts"][0]
    assert "D-ODE λ: none" in tail, tail  # a tail of another grid: stock sampler, no fit (tails option off)
    assert len(list((server.data / "models" / "D-ODE").glob("*.dode.safetensors"))) == 1

    # without λ a D-ODE sampler is the stock sampler: same image as the WebUI's own DPM++ 2M
    payload.update(sampler_name="DPM++ 2M (D-ODE)", override_settings={"dode_auto_distill": False})
    ours = request(server.base + "/sdapi/v1/txt2img", payload, timeout=900)
    text = json.loads(ours["info"])["infotexts"][0]
    assert "Sampler: DPM++ 2M (D-ODE)" in text and "D-ODE λ: none" in text, text
    stock = request(server.base + "/sdapi/v1/txt2img", {**payload, "sampler_name": "DPM++ 2M"}, timeout=900)
    assert pixels(ours["images"][0]) == pixels(stock["images"][0])


def first_image(server, payload):
    return request(server.base + "/sdapi/v1/txt2img", {**payload, "sampler_name": "Euler"}, timeout=900)["images"][0]


def pixels(b64):
    """Decoded pixel bytes of a base64 PNG (the PNG itself differs: its infotext names the sampler)."""
    import base64
    import io
    Image = pytest.importorskip("PIL.Image")
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB").tobytes()


def generate(server, **payload):
    """(images, infotexts) of a txt2img request (64×64, 4 steps unless given; no grid image for batches)."""
    overrides = {"return_grid": False, **payload.pop("override_settings", {})}
    body = {"prompt": "a photo of a cat", "steps": 4, "width": 64, "height": 64, "seed": 1, **payload,
            "override_settings": overrides, "override_settings_restore_afterwards": True}
    answer = request(server.base + "/sdapi/v1/txt2img", body, timeout=1800)
    return answer["images"], json.loads(answer["info"])["infotexts"]


def field(infotext, key):
    """The value of ``key`` in an infotext's parameter line (the WebUI quotes values with commas), or None."""
    found = re.search(rf"(?:^|, ){re.escape(key)}: (\"(?:[^\"\\\\]|\\\\.)*\"|[^,\n]*)", infotext.splitlines()[-1])
    if found is None:
        return None
    value = found.group(1)
    return json.loads(value) if value.startswith('"') else value


def test_fitted_schedule_type_is_listed(server):
    schedulers = {s["name"]: s for s in request(server.base + "/sdapi/v1/schedulers")}
    assert schedulers["dode_fitted"]["label"] == "D-ODE fitted", server.log.read_text()[-3000:]
    assert "karras" in schedulers
    scripts = request(server.base + "/sdapi/v1/script-info")
    assert any(s["name"] == "d-ode" and s["is_alwayson"] for s in scripts)  # hands each generation to the schedule


@pytest.mark.parametrize("batch, cfg", [(1, 6.0), (2, 7.0)])
def test_fitted_schedule_falls_back_then_auto_distills_then_reuses(server, batch, cfg):
    if not server.txt2img:
        pytest.skip("set WEBUI_E2E_TXT2IMG=1 to run generations")
    base = {"sampler_name": "Euler (D-ODE)", "scheduler": "D-ODE fitted", "cfg_scale": cfg, "batch_size": batch,
            "override_settings": {"dode_auto_distill": False}}
    fallback, texts = generate(server, **base)
    assert len(fallback) == len(texts) == batch
    for text in texts:  # no fit yet: the stock Karras schedule, said in the infotext
        assert field(text, "Schedule type") == "D-ODE fitted" and field(text, "D-ODE schedule") == "Karras (no fit)"
        assert field(text, "D-ODE λ") == "none", text
    karras, _ = generate(server, **{**base, "scheduler": "Karras"})
    assert [pixels(i) for i in fallback] == [pixels(i) for i in karras]  # bit-identical to choosing Karras

    fitted, texts = generate(server, **{**base, "override_settings": {
        "dode_auto_distill": True, "dode_fit_schedule": True, "dode_scale": 2}})
    refs = {field(text, "D-ODE schedule") for text in texts}
    assert len(texts) == batch and len(refs) == 1 and refs.pop().startswith("fitted "), texts
    ref = field(texts[0], "D-ODE schedule")[len("fitted "):]
    for text in texts:
        assert field(text, "D-ODE λ") == ref and field(text, "D-ODE fit").startswith("final + schedule, "), text
    name, index = ref.rsplit("#", 1)
    entry = core_package().lambdas.load_lambdas(server.data / "models" / "D-ODE" / name)[int(index)]
    assert (entry.schedule, entry.sampler, entry.cfg, entry.steps) == ("fitted", "euler", cfg, 4)
    assert entry.metrics["batch"] == batch

    reused, texts = generate(server, **base)  # the next generation: the fitted grid and its λ, no fit
    for text in texts:
        assert field(text, "D-ODE schedule") == f"fitted {ref}" and field(text, "D-ODE λ") == ref, text
        assert field(text, "D-ODE fit") is None
    assert all(pixels(a) != pixels(b) for a, b in zip(reused, fallback))  # differs from stock

    plain, texts = generate(server, **{**base, "sampler_name": "Euler"})  # a stock sampler gets the grid alone
    for text in texts:
        assert field(text, "D-ODE schedule") == f"fitted {ref}" and field(text, "D-ODE λ") is None, text
    stock, _ = generate(server, **{**base, "sampler_name": "Euler", "scheduler": "Karras"})
    assert all(pixels(a) != pixels(b) for a, b in zip(plain, stock))
    assert [pixels(i) for i in stock] == [pixels(i) for i in fallback]  # Euler (D-ODE) without λ is Euler


def test_xyz_plot_over_schedule_types(server):
    if not server.txt2img:
        pytest.skip("set WEBUI_E2E_TXT2IMG=1 to run generations")
    xyz = next(s for s in request(server.base + "/sdapi/v1/script-info")
               if s["name"] == "x/y/z plot" and not s["is_img2img"])
    axes = xyz["args"][0]["choices"]  # the X type dropdown: axis labels, passed by index
    # every argument at its default (reForge's X/Y/Z has more than A1111's), then X = schedule types, Y = Z = nothing,
    # and the cells returned as images of their own
    args = [arg.get("value") for arg in xyz["args"]]
    args[:9] = [axes.index("Schedule type"), "", ["D-ODE fitted", "Karras"], 0, "", [], 0, "", []]
    labels = [arg.get("label") for arg in xyz["args"]]
    args[labels.index("Draw legend")] = args[labels.index("Include Sub Images")] = True
    images, texts = generate(server, sampler_name="Euler (D-ODE)", cfg_scale=6.0, script_name="x/y/z plot",
                             script_args=args, override_settings={"return_grid": True})
    cells = {field(t, "Schedule type"): t for t in texts[1:]}  # texts[0] is the grid's
    assert set(cells) == {"D-ODE fitted", "Karras"}, texts
    assert field(cells["D-ODE fitted"], "D-ODE schedule").startswith("fitted ")  # fitted by the test above
    assert field(cells["Karras"], "D-ODE schedule") is None and field(cells["Karras"], "D-ODE λ") == "none"
    assert len(images) == 3
