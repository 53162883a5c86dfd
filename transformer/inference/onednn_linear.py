"""Float32 linear layers through oneDNN, with weights packed once, for CPU inference.

    model = pack_linear_layers(loaded.model)   # a packed copy; the model itself is kept as it was

PyTorch multiplies float32 matrices on a CPU with MKL's sgemm. Every x86 build of torch also
ships oneDNN (the "mkldnn" backend), whose kernels keep the weight in a layout made for the CPU
they run on ("packed", or "blocked"). Repacking a weight at every call would cost more than it
saves; a model that only translates can be packed once, when it is loaded. For the matrices of a
search step (a few hundred rows times d_model 256) that made each float32 linear layer 2.0-2.5x
faster than `F.linear` on the 2-core AMD EPYC of docs/history.md ("Issue 24, decoding"), and
whole batched searches 1.3-1.7x faster, with the same float32 arithmetic (differences of a few
units in the last place, from the order of the additions).

The op is `torch.ops.mkldnn._linear_pointwise`, which torch.compile's CPU backend itself emits for
frozen linear layers; its name starts with an underscore, so `pack_linear_layers` checks once per
process that it exists and computes what `F.linear` computes, and otherwise leaves the model as it
is. Training never goes through here: the packed weight has no gradient.
"""

from __future__ import annotations

import copy
import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transformer.model import Transformer


class PackedLinear(nn.Module):
    """An nn.Linear whose weight oneDNN has packed: the same y = x W^T + b, x (..., in) ->
    (..., out), for float32 inference on a CPU."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()  # (out, in)
        # Buffers, not parameters: nothing here is trained; not persistent: never saved.
        self.register_buffer("packed_weight", _pack(weight), persistent=False)
        bias = None if linear.bias is None else linear.bias.detach().clone()  # (out,)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """(..., in) -> (..., out)."""
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, oneDNN packed"


def _pack(weight: Tensor) -> Tensor:
    """(out, in) float32 -> oneDNN's layout for it (an opaque mkldnn tensor)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, None)


@functools.cache
def packing_works() -> bool:
    """Whether this torch build has the op, and it agrees with F.linear (checked once)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        # The global random state is left as it was: a training run packs its model at every
        # validation, and its dropout and data order must not depend on when this first ran.
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            linear = nn.Linear(64, 48)
            x = torch.randn(7, 64)  # (N, in)
            packed = PackedLinear(linear)(x)
            expected = F.linear(x, linear.weight, linear.bias)
        return torch.allclose(packed, expected, rtol=1e-4, atol=1e-5)
    except (AttributeError, RuntimeError):  # no such op in this build, or it refuses the input
        return False


def can_pack(model: nn.Module) -> bool:
    """True for a float32 model on the CPU, on a torch build where packing works."""
    parameter = next(model.parameters())
    return parameter.device.type == "cpu" and parameter.dtype == torch.float32 and packing_works()


def pack_linear_layers(model: Transformer) -> Transformer:
    """A copy of `model`, in eval mode, whose nn.Linear layers (encoder, decoder, output
    projection) are PackedLinear; `model` itself is returned unchanged when it cannot be packed
    (see `can_pack`). Embeddings, norms and attention are shared with nothing and copied as they
    are."""
    if not can_pack(model):
        return model
    packed = copy.deepcopy(model).eval()
    for layer in packed.decoder.layers:
        layer.cross_attention.split_in_proj()  # a packed weight cannot be sliced by rows
    for module in list(packed.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, name, PackedLinear(child))
    return packed
