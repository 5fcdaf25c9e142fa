"""Stub: opts (Options with data/data_labels/add_option), OptionInfo, cmd_opts, state and sd_model."""
from types import SimpleNamespace


class OptionInfo:
    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None,
                 **kwargs):
        self.default, self.label, self.component, self.component_args = default, label, component, component_args
        self.onchange, self.section = onchange, section
        self.do_not_save = False


class Options:
    def __init__(self):
        object.__setattr__(self, "data", {"hide_samplers": []})
        object.__setattr__(self, "data_labels", {})

    def add_option(self, key, info):
        self.data_labels[key] = info
        if key not in self.data:
            self.data[key] = info.default

    def __setattr__(self, key, value):
        self.data[key] = value

    def __getattr__(self, item):
        if item in self.data:
            return self.data[item]
        if item in self.data_labels:
            return self.data_labels[item].default
        raise AttributeError(item)


opts = Options()
cmd_opts = SimpleNamespace(no_hashing=False)
state = SimpleNamespace(interrupted=False, skipped=False, textinfo=None, sampling_step=0, sampling_steps=0)
sd_model = None
