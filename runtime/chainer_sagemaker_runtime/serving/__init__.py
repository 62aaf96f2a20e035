"""The container's ``serve`` command: the SageMaker inference contract (docs/contract.md §3).

Layers, outermost first: :mod:`.cli` (the command) -> :mod:`.master` (pre-forked workers,
readiness, replacement, draining) -> :mod:`.worker` (one process: event loop, HTTP, batching)
-> :mod:`.http` (HTTP/1.1 framing only) -> :mod:`.handler` (the user's hooks, knows no HTTP)
-> :mod:`.codecs` (NPY/JSON/CSV). Every client-visible failure is a
:class:`~.errors.ServingError` carrying its HTTP status, turned into a response in one place.
"""

from chainer_sagemaker_runtime.serving.errors import ServingError

__all__ = ["ServingError"]
