"""Federated adaptation on the device: Flower's ClientApp trains the deployed student.

Only :mod:`edge_agent.fl.protocol` (numpy) is safe to import without torch and Flower; the
inference path (``edge_agent.service``, ``edge_agent.runtime``) never imports this package.
"""

__all__: list[str] = []
