"""The workstation: every stage of the loop that runs on the server, and the ``fovea`` command.

``training`` (what every training stage shares), ``distill``, ``compress``, ``export``,
``federation`` (the ServerApp, aggregation, promotion), ``report``; ``cli`` (one module per
command group), ``demo`` (the stages of ``fovea demo``) and ``console`` (what they print).
"""

__all__: list[str] = []
