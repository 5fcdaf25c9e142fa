"""Stub of ComfyUI's server module: ``PromptServer.instance`` records what ``send_sync`` would send to the browser,
and holds the running prompt (``prompt_queue.currently_running``) and the executing node (``last_node_id``)."""


class PromptQueue:
    def __init__(self):
        self.currently_running = {}  # item id -> (number, prompt_id, prompt, extra_data, outputs_to_execute)


class PromptServer:
    instance = None

    def __init__(self):
        PromptServer.instance = self
        self.messages = []  # (event, data, sid)
        self.client_id = None
        self.last_node_id = None
        self.prompt_queue = PromptQueue()

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data, sid))
