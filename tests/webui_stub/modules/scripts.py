"""Stub: the base class of WebUI scripts and the AlwaysVisible marker that show() returns for always-on scripts."""


class AlwaysVisible:
    pass


class Script:
    def title(self):
        raise NotImplementedError

    def show(self, is_img2img):
        return True

    def ui(self, is_img2img):
        return []

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass
