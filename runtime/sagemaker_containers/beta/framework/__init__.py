"""``from sagemaker_containers.beta.framework import content_types, encoders, worker``.

Old SageMaker inference scripts build their ``output_fn`` replies with these; the names and
signatures are the old library's, the implementations are this runtime's (NPY is read without
pickle).
"""

from sagemaker_containers.beta.framework import content_types, encoders, worker

__all__ = ["content_types", "encoders", "worker"]
