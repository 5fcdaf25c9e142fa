"""nodes/v3.py: the D-ODE nodes' schemas, input checks, D-ODE Sampler, Load/Save λ, the MODEL output."""
import pytest
import torch

from comfy_host import cond, custom, distill, ksample, latent, make_model, with_options


def test_nodes_and_lambda_folder(cx):
    assert set(cx.nodes.NODE_CLASS_MAPPINGS) == {"DODEDistillLambdas", "DODESampler", "DODELoadLambdas",
                                                 "DODESaveLambdas", "DODEModelOptions", "DODELambdaFiles"}
    for node_id, cls in cx.nodes.NODE_CLASS_MAPPINGS.items():
        schema = cls.define_schema()
        schema.validate()
        assert schema.category == "sampling/dode" and cx.nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id]
        untipped = [i.id for i in schema.inputs if not i.kwargs.get("tooltip")]
        assert not untipped, (node_id, untipped)  # every input says what it is for
    schema = cx.v3.DistillLambdas.define_schema()
    outputs = [o.io_type for o in schema.outputs]
    # new outputs go last (links are by index), new inputs go last and are optional (old workflows keep their
    # widget values in order, old API prompts still validate)
    assert outputs == ["SAMPLER", "DODE_LAMBDAS", "LATENT", "STRING", "IMAGE", "SIGMAS", "MODEL"]
    ids = [i.id for i in schema.inputs]
    assert ids == ["model", "positive", "negative", "latent_image", "seed", "cfg", "sampler_name", "scheduler",
                   "steps", "denoise", "teacher", "scale", "save", "sigmas", "objective", "fit_schedule"]
    assert all(i.optional for i in schema.inputs[-3:])
    inputs = {i.id: i for i in schema.inputs}
    assert inputs["cfg"].default == 8.0  # KSampler's default
    assert inputs["denoise"].kwargs["min"] > 0  # a denoise the run accepts
    assert inputs["fit_schedule"].default is False
    # the stock schedulers, read anew with each schema (later ones show); not 'dode', which serves fits
    assert inputs["scheduler"].options == [s for s in cx.samplers.KSampler.SCHEDULERS if s != "dode"]
    paths, exts = cx.folder_paths.folder_names_and_paths["dode_lambdas"]
    assert paths[0] == str(cx.lambda_dir) and exts == {".safetensors"}


def test_combo_values_are_validated(cx):
    """ComfyUI v0.3.x does not check COMBO values of V3 nodes. validate_inputs checks only the choices whose list
    changes (so ComfyUI's own checks stay on for the rest, tests/test_comfy_ux.py); the fixed ones are checked first
    thing in execute, naming the input."""
    v3 = cx.v3
    assert v3.DistillLambdas.validate_inputs(scheduler="karras") is True
    assert "scheduler: 'nope' is not one of" in v3.DistillLambdas.validate_inputs(scheduler="nope")
    assert "Distill λ fits a stock scheduler" in v3.DistillLambdas.validate_inputs(scheduler="dode")
    with pytest.raises(ValueError, match="objective: 'best'"):
        v3.DistillLambdas.execute(make_model(cx), cond(0.5), cond(-0.5), latent(2), 1, 3.0, "euler", "karras", 6,
                                  1.0, "heun", 2, False, objective="best")
    with pytest.raises(ValueError, match="on_missing: 'maybe'"):
        v3.ModelOptions.execute(make_model(cx), "maybe", "full", "heun", 2)
    assert "lambda_file: 'gone.safetensors'" in v3.DODESampler.validate_inputs(lambda_file="gone.safetensors")
    with pytest.raises(ValueError, match="scheduler: 'nope'"):
        distill(cx, make_model(cx), scheduler="nope", save=False)


def explicit_loose_on(cx, lambdas):
    """The SAMPLER Distill λ would return for ``lambdas`` with strict off."""
    return cx.samplers.KSAMPLER(cx.sampling.make_sampler_function("euler"),
                                extra_options={"dode_lambdas": lambdas, "dode_strict": False})


def test_dode_sampler_node_explicit_lambdas(clean):
    model = make_model(clean)
    sampler, lambdas, *_ = distill(clean, model, save=False)
    node = clean.v3.DODESampler
    sigmas6 = clean.v3.compute_sigmas(model, "euler", "karras", 6, 1.0)
    noise = clean.sample.prepare_noise(latent(1)["samples"], 3)

    def run(smp, sigmas=sigmas6, cfg=3.0, m=model):
        return clean.sample.sample_custom(m, noise, cfg, smp, sigmas, cond(0.5), cond(-0.5), latent(1)["samples"],
                                          seed=3)

    explicit = node.execute("euler", "(λ store lookup)", True, lambdas=lambdas).args[0]
    assert torch.equal(run(explicit), run(sampler))
    from dode import LambdaNotFound
    with pytest.raises(LambdaNotFound, match="6 steps, not 8"):  # another grid: an error on an explicit node
        run(explicit, sigmas=clean.v3.compute_sigmas(model, "euler", "karras", 8, 1.0))
    with pytest.raises(LambdaNotFound, match="cfg"):
        run(explicit, cfg=5.0)
    with pytest.raises(LambdaNotFound, match="another model"):
        run(explicit, m=make_model(clean, seed=2))
    loose = node.execute("euler", "(λ store lookup)", False, lambdas=lambdas).args[0]
    assert not torch.equal(run(loose, cfg=5.0), run(clean.samplers.ksampler("euler"), cfg=5.0))
    other = make_model(clean, seed=2)  # not strict: another model's run still gets these λ
    assert torch.equal(run(loose, m=other), run(explicit_loose_on(clean, lambdas), m=other))
    assert not torch.equal(run(loose, m=other), run(clean.samplers.ksampler("euler"), m=other))
    with pytest.raises(LambdaNotFound, match="sampler euler"):
        run(node.execute("heun", "(λ store lookup)", True, lambdas=lambdas).args[0])
    # no λ set and store lookup: behaves like heun_dode by name (stock on a miss)
    store_sampler = node.execute("heun", "(λ store lookup)", True).args[0]
    assert torch.equal(run(store_sampler), run(clean.samplers.ksampler("heun_dode")))


def test_save_load_and_cache_invalidation(clean):
    model = make_model(clean)
    _, lambdas, *_ = distill(clean, model, save=False)
    clean.v3.SaveLambdas.execute(lambdas, "my set/../x")
    (name,) = clean.store.file_list()
    assert name == "my_set_.._x.safetensors"  # a plain file name in the λ folder, whatever was typed
    loaded, info = clean.v3.LoadLambdas.execute(name).args
    assert len(loaded.entries) == 1 and torch.equal(loaded.entries[0].lambdas, lambdas.entries[0].lambdas)
    assert "euler, 6 steps" in info
    stamp = clean.v3.LoadLambdas.fingerprint_inputs(lambda_file=name)
    assert stamp == clean.v3.DODESampler.fingerprint_inputs(lambda_file=name)
    assert clean.v3.DODESampler.fingerprint_inputs(lambda_file="(λ store lookup)") == ""
    _, other, *_ = distill(clean, model, steps=4, save=False)  # a second entry merged into the same file
    clean.v3.SaveLambdas.execute(other, "my set/../x")
    assert clean.v3.LoadLambdas.fingerprint_inputs(lambda_file=name) != stamp
    assert len(clean.v3.LoadLambdas.execute(name).args[0].entries) == 2
    assert clean.v3.LoadLambdas.validate_inputs(lambda_file="nope.safetensors").startswith("λ file 'nope")
    assert clean.v3.LoadLambdas.validate_inputs(lambda_file=name) is True
    sampler = clean.v3.DODESampler.execute("euler", name, True).args[0]
    assert sampler.extra_options["dode_lambdas"].source == f"λ file {name}"


def test_model_output_carries_the_fit_and_keeps_the_model_options(clean):
    model = make_model(clean)
    strict = with_options(clean, model, on_missing="error")
    sampler, lambdas, *_, fitted_model = distill(clean, strict, save=False, outputs=7)
    options = fitted_model.model_options["dode"]
    assert options.on_missing == "error" and options.lambdas is lambdas and "dode" in strict.model_options
    assert strict.model_options["dode"].lambdas is None  # a clone: the input model is unchanged
    sigmas6 = clean.v3.compute_sigmas(model, "euler", "karras", 6, 1.0)
    assert torch.equal(ksample(clean, fitted_model, "euler_dode"), custom(clean, model, sampler, sigmas6))
    with pytest.raises(RuntimeError, match="no λ for"):  # the store has nothing (save off), and on_missing is kept
        ksample(clean, fitted_model, "euler_dode", steps=5)
