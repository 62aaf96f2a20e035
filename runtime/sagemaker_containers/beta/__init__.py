"""``sagemaker_containers.beta``: the namespace old inference scripts import from."""
