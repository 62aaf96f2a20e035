"""The anchor's Chainer handler: the old SageMaker Chainer container's serving module, rewritten.

Runs inside the anchor virtualenv under gunicorn (``anchor_serving:main``), on PyPI's
``sagemaker-containers`` 2.8.6.post2 exactly as the last official Chainer images did: the WSGI
app is built lazily on a worker's first request (download + ``pip install`` of the user module,
then ``model_fn``), and the defaults mirror docs/contract.md §3.3 using that library's own encoders
and transformer. Written for this benchmark; not imported by the project.
"""

from __future__ import annotations

import chainer
import numpy as np

from sagemaker_containers.beta.framework import (
    content_types,
    encoders,
    env,
    modules,
    transformer,
    worker,
)

__all__ = ["main"]


def default_input_fn(input_data, content_type):
    array = encoders.decode(input_data, content_type)
    return array.astype(np.float32) if content_type in content_types.UTF8_TYPES else array


def default_predict_fn(data, model):
    with chainer.using_config("train", False), chainer.no_backprop_mode():
        result = model(data)
    return result.array if isinstance(result, chainer.Variable) else result


def default_output_fn(prediction, accept):
    return worker.Response(encoders.encode(prediction, accept), accept, mimetype=accept)


def _transformer(user_module):
    return transformer.Transformer(
        model_fn=user_module.model_fn,
        input_fn=getattr(user_module, "input_fn", default_input_fn),
        predict_fn=getattr(user_module, "predict_fn", default_predict_fn),
        output_fn=getattr(user_module, "output_fn", default_output_fn),
    )


app = None


def main(environ, start_response):
    global app
    if app is None:
        serving_env = env.ServingEnv()
        user_module = modules.import_module(serving_env.module_dir, serving_env.module_name)
        user_transformer = _transformer(user_module)
        user_transformer.initialize()
        app = worker.Worker(
            transform_fn=user_transformer.transform, module_name=serving_env.module_name
        )
    return app(environ, start_response)
