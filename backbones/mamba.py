"""Mamba (Gu & Dao, 2023): residual blocks around mamba-ssm's own `Mamba` mixer.

The parameters are those of `mamba_ssm.modules.mamba_simple.Mamba` (same names, shapes and
initialisation), so a checkpoint moves between CPU and GPU. The mixer's computation is written here
from those parameters because mamba-ssm's `forward` cannot start from a carried state: on a GPU it
runs mamba-ssm's CUDA selective scan (and `causal_conv1d` when installed), on CPU an exact
PyTorch scan (`backbones._selective_scan`). `MambaStack` is shared with Mamba2.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from backbones._mamba_ops import (
    causal_conv,
    conv_history,
    conv_step,
    mamba_ssm,
    selective_scan,
    selective_state_step,
)
from backbones.base import Backbone, State, register_backbone

if TYPE_CHECKING:
    from mamba_ssm.modules.mamba_simple import Mamba

_Mixing = Callable[[nn.Module, Tensor, Tensor, Tensor | None], tuple[Tensor, Tensor, Tensor]]


@dataclasses.dataclass
class MambaState(State):
    """Per layer: the short convolution's input history and the SSM state."""

    batch_dim = 1

    conv_state: Tensor
    """`[depth, B, conv_channels, d_conv - 1]`: each layer's last `d_conv - 1` conv inputs."""
    ssm_state: Tensor
    """`[depth, B, d_inner, d_state]` (Mamba) or `[depth, B, nheads, headdim, d_state]` (Mamba2), float32."""


class _Block(nn.Module):
    """`x + dropout(mixer(norm(x)))`; named like mamba-ssm's `Block` (`norm`, `mixer`)."""

    def __init__(self, *, mixer: nn.Module, d_model: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(d_model, eps=1e-5)
        self.mixer = mixer
        self.dropout = nn.Dropout(dropout)


class MambaStack(Backbone[MambaState]):
    """Pre-norm residual stack of mamba-ssm mixers and a final RMSNorm; subclasses run one mixer."""

    def __init__(self, *, d_model: int, mixers: list[nn.Module], dropout: float) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{self.name}: dropout must be in [0, 1), got {dropout}")
        self.d_model = d_model
        self.layers = nn.ModuleList(
            _Block(mixer=mixer, d_model=d_model, dropout=dropout) for mixer in mixers
        )
        self.norm_f = nn.RMSNorm(d_model, eps=1e-5)

    @abstractmethod
    def _state_shapes(self, batch_size: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of one layer's `(conv_state, ssm_state)`."""

    @abstractmethod
    def _mix(
        self, mixer: nn.Module, x: Tensor, conv_state: Tensor, ssm_state: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One mixer over `x: [B, T, D]` after its states (`ssm_state=None`: zeros).

        Returns `(y, conv_state, ssm_state)`.
        """

    @abstractmethod
    def _mix_step(
        self, mixer: nn.Module, x_t: Tensor, conv_state: Tensor, ssm_state: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One mixer over one token `x_t: [B, D]`. Returns `(y_t, conv_state, ssm_state)`."""

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> MambaState:
        conv_shape, ssm_shape = self._state_shapes(batch_size)
        depth = len(self.layers)
        return MambaState(
            conv_state=torch.zeros((depth, *conv_shape), device=device, dtype=dtype),
            ssm_state=torch.zeros((depth, *ssm_shape), device=device, dtype=torch.float32),
        )

    def _run(self, x: Tensor, state: MambaState | None, mix: _Mixing) -> tuple[Tensor, MambaState]:
        """The residual stack with `mix` (`_mix` or `_mix_step`) running each mixer.

        From scratch (`state=None`) the mixers get `ssm_state=None`: the GPU kernels' fast path.
        """
        fresh = state is None
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        convs, ssms = [], []
        blocks = cast("Iterable[_Block]", self.layers)  # a ModuleList is typed as any Module's
        for layer, conv_state, ssm_state in zip(
            blocks, state.conv_state, state.ssm_state, strict=True
        ):
            y, conv_state, ssm_state = mix(
                layer.mixer, layer.norm(x), conv_state, None if fresh else ssm_state
            )
            x = x + layer.dropout(y)
            convs.append(conv_state)
            ssms.append(ssm_state)
        return self.norm_f(x), MambaState(
            conv_state=torch.stack(convs), ssm_state=torch.stack(ssms)
        )

    def forward(self, x: Tensor, *, state: MambaState | None = None) -> tuple[Tensor, MambaState]:
        return self._run(x, state, self._mix)

    def step(self, x_t: Tensor, *, state: MambaState) -> tuple[Tensor, MambaState]:
        # given a state, `_run` passes every mixer its ssm_state, never None
        return self._run(x_t, state, cast(_Mixing, self._mix_step))


def check_sizes(name: str, **sizes: int) -> None:
    """A clear error for a size argument below 1."""
    for arg, value in sizes.items():
        if value < 1:
            raise ValueError(f"{name}: {arg} must be >= 1, got {value}")


@register_backbone("mamba")
class MambaBackbone(MambaStack):
    """Mamba (selective SSM) blocks: `mamba_ssm.modules.mamba_simple.Mamba` as the mixer."""

    def __init__(
        self,
        *,
        d_model: int,
        depth: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        """
        Args:
            d_model: width of the residual stream (input and output features).
            depth: number of residual Mamba blocks.
            d_state: SSM state size per channel (N).
            d_conv: width of the causal depthwise convolution before the SSM.
            expand: inner width `d_inner = expand * d_model`.
            dt_rank: rank of the step-size projection; None: `ceil(d_model / 16)` (mamba-ssm's "auto").
            dropout: dropout on each block's output before the residual sum.
        """
        check_sizes(
            "mamba", d_model=d_model, depth=depth, d_state=d_state, d_conv=d_conv, expand=expand
        )
        if dt_rank is not None:
            check_sizes("mamba", dt_rank=dt_rank)
        mixers = [
            mamba_ssm("Mamba")(
                d_model=d_model,
                d_state=d_state,
                d_conv=d_conv,
                expand=expand,
                dt_rank="auto" if dt_rank is None else dt_rank,
                layer_idx=i,
            )
            for i in range(depth)
        ]
        super().__init__(d_model=d_model, mixers=mixers, dropout=dropout)

    def _state_shapes(self, batch_size: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        mixer = cast("Mamba", self.layers[0].mixer)  # every layer is a _Block around a Mamba
        return (batch_size, mixer.d_inner, mixer.d_conv - 1), (
            batch_size,
            mixer.d_inner,
            mixer.d_state,
        )

    def _mix(
        self, mixer: Mamba, x: Tensor, conv_state: Tensor, ssm_state: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        # split the features, not a `two` axis: the backward then concatenates rows, no transpose
        xi, z = (rearrange(t, "b l d -> b d l") for t in mixer.in_proj(x).chunk(2, dim=-1))
        xc = causal_conv(xi, conv_state, mixer.conv1d.weight, mixer.conv1d.bias)
        dt, B, C = torch.split(
            mixer.x_proj(rearrange(xc, "b d l -> b l d")),
            [mixer.dt_rank, mixer.d_state, mixer.d_state],
            dim=-1,
        )
        dt = F.linear(dt, mixer.dt_proj.weight)  # the bias is added (in float32) by the scan
        y, ssm_state = selective_scan(
            xc,
            rearrange(dt, "b l d -> b d l"),
            -torch.exp(mixer.A_log.float()),
            rearrange(B, "b l n -> b n l"),
            rearrange(C, "b l n -> b n l"),
            mixer.D.float(),
            z=z,
            delta_bias=mixer.dt_proj.bias.float(),
            delta_softplus=True,
            initial_state=ssm_state,
        )
        y = mixer.out_proj(rearrange(y, "b d l -> b l d"))
        return y, conv_history(conv_state, xi), ssm_state

    def _mix_step(
        self, mixer: Mamba, x_t: Tensor, conv_state: Tensor, ssm_state: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        xi, z = mixer.in_proj(x_t).chunk(2, dim=-1)
        xc, conv_state = conv_step(mixer.conv1d, conv_state, xi)
        dt, B, C = torch.split(
            mixer.x_proj(xc), [mixer.dt_rank, mixer.d_state, mixer.d_state], dim=-1
        )
        y, ssm_state = selective_state_step(
            ssm_state,
            xc.float(),
            F.linear(dt, mixer.dt_proj.weight).float(),
            -torch.exp(mixer.A_log.float()),
            B.float(),
            C.float(),
            mixer.D.float(),
            z.float(),
            mixer.dt_proj.bias.float(),
        )
        return mixer.out_proj(y.to(x_t.dtype)), conv_state, ssm_state
