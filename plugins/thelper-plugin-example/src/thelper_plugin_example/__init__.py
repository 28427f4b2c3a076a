"""thelper-plugin-example: a third-party thelper plugin written against the public API only.

It shows every piece a plugin usually needs:

* :mod:`thelper_plugin_example.plugin`: the entry point (``thelper.plugins: example``); it
  registers components as data (lazy ``"module:attr"`` strings) and implements one lifecycle
  hook. It imports neither torch nor pydantic.
* :mod:`thelper_plugin_example.params`: the pydantic params models (torch-free), imported to
  validate a config that names one of the components.
* :mod:`thelper_plugin_example.datasets`, :mod:`~thelper_plugin_example.models` and
  :mod:`~thelper_plugin_example.metrics`: the implementations, imported only when a session
  builds them.

Importing this package does not import torch.
"""

from __future__ import annotations

__all__ = ["PLUGIN_PACKAGE"]

#: Module prefix of every factory this plugin registers (used to recognise its components).
PLUGIN_PACKAGE = "thelper_plugin_example"
