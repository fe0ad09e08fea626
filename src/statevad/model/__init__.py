"""The STATE network and everything about its weights, one concern per file:

* :mod:`~statevad.model.network` -- the network (spec section 5), :func:`build_model`, :func:`inference_copy`;
* :mod:`~statevad.model.kernels` -- the exact fast kernels it runs on (fused BatchNorm + ReLU, the composed
  decoder upsampling);
* :mod:`~statevad.model.original` -- the original authors' state_dict keys, import and export of their
  weights.

Saving and loading model files is :mod:`statevad.checkpoint`'s business, not this package's.
"""

from statevad.model.kernels import BatchNorm2d, upsample_conv
from statevad.model.network import (
    STATE,
    build_model,
    count_parameters,
    inference_copy,
    sine_table,
    validate_config,
)
from statevad.model.original import (
    export_original,
    import_original,
    infer_config,
    original_keys,
    unwrap_original,
)

__all__ = [
    "STATE", "BatchNorm2d", "build_model", "count_parameters", "export_original", "import_original",
    "infer_config", "inference_copy", "original_keys", "sine_table", "unwrap_original", "upsample_conv",
    "validate_config",
]
