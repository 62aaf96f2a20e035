"""The second anchor's Chainer handler: ``sagemaker-inference`` on ``multi-model-server``.

Loaded by a multi-model-server backend worker (``--handler mms_handler``): its ``handle``
function initialises the toolkit's ``DefaultHandlerService`` on the first call, which imports
the user module named by ``SAGEMAKER_PROGRAM`` from ``<model_dir>/code`` (as the framework
containers built on this toolkit do) and uses its ``model_fn``; the default input, predict and
output functions mirror docs/contract.md §3.3 like the first anchor's, with the toolkit's own
decoders and encoders. Written for this benchmark; not imported by the project.
"""

from __future__ import annotations

import chainer
import numpy as np
from sagemaker_inference import content_types, decoder, encoder
from sagemaker_inference.default_handler_service import DefaultHandlerService
from sagemaker_inference.default_inference_handler import DefaultInferenceHandler
from sagemaker_inference.transformer import Transformer

__all__ = ["handle"]


class _ChainerDefaults(DefaultInferenceHandler):
    def default_model_fn(self, model_dir, context=None):
        raise NotImplementedError("the user module must define model_fn")

    def default_input_fn(self, input_data, content_type, context=None):
        array = decoder.decode(input_data, content_type)
        return array.astype(np.float32) if content_type in content_types.UTF8_TYPES else array

    def default_predict_fn(self, data, model, context=None):
        with chainer.using_config("train", False), chainer.no_backprop_mode():
            result = model(data)
        return result.array if isinstance(result, chainer.Variable) else result

    def default_output_fn(self, prediction, accept, context=None):
        return encoder.encode(prediction, accept)


_service = DefaultHandlerService(
    transformer=Transformer(default_inference_handler=_ChainerDefaults())
)
_initialized = False


def handle(data, context):
    global _initialized
    if not _initialized:
        _service.initialize(context)
        _initialized = True
    if data is None:
        return None
    return _service.handle(data, context)
