"""Mamba2 (Dao & Gu, 2024): residual blocks around mamba-ssm's own `Mamba2` mixer.

The parameters are those of `mamba_ssm.modules.mamba2.Mamba2` (same names, shapes, initialisation),
so a checkpoint moves between CPU and GPU. The mixer is run here from those parameters, with a
carried state: on a GPU through mamba-ssm's Triton kernels (`mamba_chunk_scan_combined` with
initial states, `selective_state_update`, the gated RMSNorm), on CPU through SSD's chunked
quadratic form in batched matmuls and mamba-ssm's reference norm (`backbones._mamba_ops`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
from einops import rearrange
from torch import Tensor

from backbones._mamba_ops import (
    causal_conv,
    conv_history,
    conv_step,
    gated_rms_norm,
    mamba_ssm,
    ssd_scan,
    ssd_state_step,
)
from backbones.base import register_backbone
from backbones.mamba import MambaStack, check_sizes

if TYPE_CHECKING:
    from mamba_ssm.modules.mamba2 import Mamba2


@register_backbone("mamba2")
class Mamba2Backbone(MambaStack):
    """Mamba2 (state-space duality) blocks: `mamba_ssm.modules.mamba2.Mamba2` as the mixer."""

    def __init__(
        self,
        *,
        d_model: int,
        depth: int,
        d_state: int = 64,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 32,
        ngroups: int = 1,
        chunk_size: int = 256,
        dropout: float = 0.0,
    ) -> None:
        """
        Args:
            d_model: width of the residual stream (input and output features).
            depth: number of residual Mamba2 blocks.
            d_state: SSM state size per head (N).
            d_conv: width of the causal depthwise convolution before the SSM.
            expand: inner width `d_inner = expand * d_model`, split into `d_inner / headdim` heads.
            headdim: channels per head (P); must divide `expand * d_model`.
            ngroups: groups of heads sharing B and C; must divide the number of heads.
            chunk_size: chunk length of mamba-ssm's SSD kernel on a GPU (the CPU path uses its
                own, `CPU_SSD_CHUNK`); changes speed, not the result.
            dropout: dropout on each block's output before the residual sum.
        """
        check_sizes(
            "mamba2",
            d_model=d_model,
            depth=depth,
            d_state=d_state,
            d_conv=d_conv,
            expand=expand,
            headdim=headdim,
            ngroups=ngroups,
            chunk_size=chunk_size,
        )
        d_inner = expand * d_model
        if d_inner % headdim:
            raise ValueError(
                f"mamba2: headdim={headdim} must divide expand * d_model = {d_inner}; "
                "change headdim, expand or d_model"
            )
        if (d_inner // headdim) % ngroups:
            raise ValueError(
                f"mamba2: ngroups={ngroups} must divide the number of heads {d_inner // headdim}"
            )
        mixers = [
            mamba_ssm("Mamba2")(
                d_model=d_model,
                d_state=d_state,
                d_conv=d_conv,
                expand=expand,
                headdim=headdim,
                ngroups=ngroups,
                chunk_size=chunk_size,
                layer_idx=i,
            )
            for i in range(depth)
        ]
        super().__init__(d_model=d_model, mixers=mixers, dropout=dropout)

    def _state_shapes(self, batch_size: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        mixer = cast("Mamba2", self.layers[0].mixer)  # every layer is a _Block around a Mamba2
        conv_channels = mixer.conv1d.weight.shape[0]
        return (batch_size, conv_channels, mixer.d_conv - 1), (
            batch_size,
            mixer.nheads,
            mixer.headdim,
            mixer.d_state,
        )

    @staticmethod
    def _split(mixer: Mamba2, zxbcdt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """`in_proj` output -> `(z, xBC, dt)` in mamba-ssm's order `[z, x, B, C, dt]`."""
        d_xbc = mixer.d_ssm + 2 * mixer.ngroups * mixer.d_state
        z, xbc, dt = torch.split(zxbcdt, [mixer.d_ssm, d_xbc, mixer.nheads], dim=-1)
        return z, xbc, dt

    @staticmethod
    def _split_xbc(mixer: Mamba2, xbc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Convolved `xBC [..., C]` -> `x [..., h, p]`, `B, C [..., g, n]`."""
        gn = mixer.ngroups * mixer.d_state
        x, B, C = torch.split(xbc, [mixer.d_ssm, gn, gn], dim=-1)
        return (
            rearrange(x, "... (h p) -> ... h p", p=mixer.headdim),
            rearrange(B, "... (g n) -> ... g n", g=mixer.ngroups),
            rearrange(C, "... (g n) -> ... g n", g=mixer.ngroups),
        )

    def _mix(
        self, mixer: Mamba2, x: Tensor, conv_state: Tensor, ssm_state: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        z, xbc, dt = self._split(mixer, mixer.in_proj(x))
        xbc = rearrange(xbc, "b l c -> b c l")
        conv_out = causal_conv(xbc, conv_state, mixer.conv1d.weight, mixer.conv1d.bias)
        xs, B, C = self._split_xbc(mixer, rearrange(conv_out, "b c l -> b l c"))
        y, ssm_state = ssd_scan(
            xs,
            dt,
            -torch.exp(mixer.A_log.float()),
            B,
            C,
            chunk_size=mixer.chunk_size,
            D=mixer.D,
            dt_bias=mixer.dt_bias,
            initial_state=ssm_state,
        )
        y = gated_rms_norm(mixer.norm, rearrange(y, "b l h p -> b l (h p)").to(x.dtype), z)
        return mixer.out_proj(y), conv_history(conv_state, xbc), ssm_state

    def _mix_step(
        self, mixer: Mamba2, x_t: Tensor, conv_state: Tensor, ssm_state: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        z, xbc, dt = self._split(mixer, mixer.in_proj(x_t))
        conv_out, conv_state = conv_step(mixer.conv1d, conv_state, xbc)
        xs, B, C = self._split_xbc(mixer, conv_out)
        y, ssm_state = ssd_state_step(
            ssm_state,
            xs.float(),
            dt.float(),
            -torch.exp(mixer.A_log.float()),
            B.float(),
            C.float(),
            mixer.D.float(),
            mixer.dt_bias.float(),
        )
        y = gated_rms_norm(mixer.norm, rearrange(y, "b h p -> b (h p)").to(x_t.dtype), z)
        return mixer.out_proj(y), conv_state, ssm_state
