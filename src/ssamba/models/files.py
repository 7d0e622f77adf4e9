"""The files of a saved ssamba model, named once for the writers and readers of it
(:mod:`.serialization`, :mod:`.hub`)."""

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "ssamba-model"
FORMAT_VERSION = 1
