"""Dynamic int8 quantization for CPU inference.

    model = quantize_model(loaded.model, "int8")       # a quantized copy; the float model is kept
    python translate.py -c best.pt --quantize int8 -i test.en

Dynamic quantization stores the weights of the linear layers as int8 (one scale per output row)
and quantizes each layer's input on the fly, row batch by row batch, so no calibration data is
needed and the int8 matrix multiplications run on the CPU's integer units (AVX2 / AVX512-VNNI
through fbgemm or oneDNN). It is PyTorch's own eager-mode tooling,
`torch.ao.quantization.quantize_dynamic`. Torch marks that namespace as deprecated in favour of
torchao, whose int8 path targets `torch.compile` and GPUs; the eager CPU kernels used here are still
the ones shipped in torch, so the deprecation warnings are silenced for this one call.

The output projection (decoder states to 8,000 vocabulary logits) is int8 too by default: it is
the largest matmul of every search step, and on the default recipe's 60-minute model
(docs/benchmarks.md, beam 5, all 1,014 `val` sentences, 2 cores) int8 everywhere scored 40.24 val
BLEU against 40.05 with a float32 projection and 40.04 in float32, while translating at 315, 215
and 149 sentences/s.
`quantize_model(..., output_projection=False)` keeps it float32. Embeddings, layer norms and
attention itself (softmax(q k^T) v) stay float32: they are not linear layers.

The cross-attention applies the query rows and the key/value rows of its fused `in_proj` to
different inputs. An int8 weight cannot be sliced, so each part becomes a quantized layer of its own
(`MultiHeadAttentionBlock.in_proj_parts`). The checkpoint's float state_dict is never changed: a
quantized model is built from a float one at load time and is not saved.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

from transformer.model import Transformer

QUANTIZATIONS = ("int8",)
QUANTIZE_OUTPUT_PROJECTION = True  # chosen on val: see the module docstring


class QuantizationError(ValueError):
    """A quantization that cannot be done here; the message says what to do instead."""


def check_quantization(kind: str, device: torch.device | str) -> None:
    """Fail early, with one clear message, for an unknown kind or a device without int8 kernels."""
    if kind not in QUANTIZATIONS:
        raise QuantizationError(
            f"unknown quantization {kind!r}; choose one of: {', '.join(QUANTIZATIONS)}"
        )
    if torch.device(device).type != "cpu":
        raise QuantizationError(
            f"{kind} dynamic quantization runs on the CPU only, not on {device}: translate on "
            "the CPU (--device cpu), or leave quantization out on an accelerator"
        )
    if torch.backends.quantized.engine == "none":
        raise QuantizationError(
            "this PyTorch build has no quantized CPU engine (torch.backends.quantized."
            "supported_engines is empty); install a standard torch wheel"
        )


def quantize_model(
    model: Transformer, kind: str = "int8", output_projection: bool = QUANTIZE_OUTPUT_PROJECTION
) -> Transformer:
    """An int8 copy of a float model, in eval mode, for CPU inference; `model` is left as it was.

    Every nn.Linear of the encoder and decoder becomes a dynamically quantized one with per-row
    weight scales (finer than one scale per matrix, at the same speed); the output projection
    too when `output_projection` (see the module docstring)."""
    check_quantization(kind, next(model.parameters()).device)
    quantized = copy.deepcopy(model).eval()  # deepcopy keeps tied weights tied
    for layer in quantized.decoder.layers:
        layer.cross_attention.split_in_proj()
    projection = quantized.projection.linear
    spec = {
        name: per_channel_dynamic_qconfig
        for name, module in quantized.named_modules()
        if isinstance(module, nn.Linear) and (output_projection or module is not projection)
    }
    with warnings.catch_warnings():
        # The deprecation of torch.ao.quantization and of quantized tensor constructors is torch's
        # to resolve, not the user's (see the module docstring).
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r".*quantize_per_(tensor|channel).*deprecated")
        quantize_dynamic(quantized, spec, dtype=torch.qint8, inplace=True)
    return quantized
