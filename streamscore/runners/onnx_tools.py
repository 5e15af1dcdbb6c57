"""Offline transforms of an ONNX model for ``streamscore optimize``: the ONNX edge of it (only the
runners import onnxruntime). Each writes a new file and leaves the original alone."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def write_optimized(source: Path, target: Path) -> None:
    """onnxruntime's graph optimizations (constant folding, node fusions) saved to ``target``.

    The extended level, not ``all``: ``all`` adds layout changes for this machine's CPU that
    another machine may not run."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"])


def write_int8(source: Path, target: Path) -> None:
    """Dynamic quantization: int8 weights, activations quantized per call (no calibration data).
    Only MatMul/Gemm-like nodes change; a tree ensemble has none and comes out as it went in."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, target, weight_type=QuantType.QInt8)


def write_fp16(source: Path, target: Path) -> None:
    """float16 weights and arithmetic, float32 inputs and outputs (so the service feeds it as is).
    Meant for GPUs: CPUs mostly compute float16 slower. onnxconverter-common keeps the nodes with
    no float16 kernel (tree ensembles among them) in float32."""
    import onnx

    try:
        from onnxconverter_common import float16
    except ImportError:
        from streamscore.errors import ConfigError

        raise ConfigError("--fp16: needs onnxconverter-common (pip install 'streamscore[monitor]')") from None
    model = onnx.load(str(source))
    # Identity stays float32: converted, one feeding a graph output is left float16 behind the output's
    # float32 type (onnxconverter-common 1.16 with keep_io_types), and the model no longer loads
    blocked = [*float16.DEFAULT_OP_BLOCK_LIST, "Identity"]
    onnx.save(float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked), str(target))
