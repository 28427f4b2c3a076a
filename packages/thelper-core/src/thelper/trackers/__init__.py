"""Trackers: lifecycle plugins that record a session (TensorBoard events, ``run.json``).

They are registered by the core like any plugin (names ``tensorboard`` and ``run-record``)
and can be blocked with ``-p no:tensorboard``.
"""
