"""Stub: KDiffusionSampler keeps the sampler function (a callable funcname is used as it is)."""
sampler_extra_params = {}


class KDiffusionSampler:
    def __init__(self, funcname, sd_model, options=None):
        self.funcname = funcname
        self.extra_params = sampler_extra_params.get(funcname, [])
        self.options = options or {}
        self.func = funcname if callable(funcname) else None
        self.sd_model = sd_model
        self.config = None


def stock(label, aliases, options):
    from .sd_samplers_common import SamplerData
    return SamplerData(label, lambda model: KDiffusionSampler("sample_" + label.lower(), model), aliases, options)


samplers_data_k_diffusion = [
    stock("DPM++ 2M", ["k_dpmpp_2m"], {"scheduler": "karras"}),
    stock("Euler", ["k_euler"], {}),
    stock("Heun", ["k_heun"], {"second_order": True}),
]
