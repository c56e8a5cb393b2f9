"""The model zoo: small, seeded models that tests and benchmarks compile.

Every entry builds ``(model in eval mode, example args, example kwargs)`` from a config with random
weights (no downloads), small enough that the whole zoo exports and runs on a 2-core CPU in seconds.
The attention entries cover the spellings that ``recognize-attention`` must catch: SDPA, hand-written
``masked_fill`` with a ``tril`` buffer, an additive ``triu`` mask, and grouped-query heads.

    from examples.models import ZOO, get
    model, args, kwargs = get("gpt2").build()
    torch.export.export(model, args, kwargs, strict=False)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Built = tuple[nn.Module, tuple, dict]


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model: a seeded builder and the fp32 tolerances to compare a compiled run with eager."""

    name: str
    build: Callable[[], Built]
    atol: float
    rtol: float
    description: str


# ---------------------------------------------------------------------------------------------------
# MLP and CNN


class MLP(nn.Module):
    """Linear-GELU-Linear-ReLU-Linear with a LayerNorm in front: elementwise chains around GEMMs."""

    def __init__(self, d_in: int = 64, d_hidden: int = 128, d_out: int = 32):
        super().__init__()
        self.norm = nn.LayerNorm(d_in)
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_hidden)
        self.fc3 = nn.Linear(d_hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.fc1(self.norm(x)))
        return self.fc3(F.relu(self.fc2(x)))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-bn, a residual add, ReLU; a 1x1 conv shortcut when it strides."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNet(nn.Module):
    """A small hand-written ResNet: conv-bn-relu stem, two basic blocks, one downsampling block, head.

    Written by hand because torchvision is not a dependency; the conv→bn→relu→residual pattern is what
    ``fuse-blocks`` targets.
    """

    def __init__(self, width: int = 16, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.layer1 = nn.Sequential(BasicBlock(width, width), BasicBlock(width, width))
        self.layer2 = BasicBlock(width, 2 * width, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.head(torch.flatten(self.pool(x), 1))


def _randomize_batchnorm(model: nn.Module) -> None:
    """Give BatchNorm layers non-trivial running stats and affine params, so eval-mode BN is not identity."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


def build_mlp() -> Built:
    """MLP on a [2, 16, 64] batch of token features."""
    torch.manual_seed(0)
    return MLP().eval(), (torch.randn(2, 16, 64),), {}


def build_resnet() -> Built:
    """ResNet on a [2, 3, 32, 32] image batch, BatchNorm in eval mode with random running stats."""
    torch.manual_seed(0)
    model = ResNet()
    with torch.no_grad():
        _randomize_batchnorm(model)
    return model.eval(), (torch.randn(2, 3, 32, 32),), {}


# ---------------------------------------------------------------------------------------------------
# HuggingFace transformers (random weights from small configs)
#
# All three use attn_implementation="sdpa", the realistic default; on transformers 5.23 they export
# with strict=False (what solder's capture uses) and strict=True without further flags. Under export
# transformers passes an explicit [B, 1, T, T] boolean mask to SDPA (also for GPT-2's causal mask and
# ViT's unmasked attention) rather than is_causal=True, so the IR sees a masked SDPA.


class LogitsOnly(nn.Module):
    """Wraps a causal LM so forward returns the logits tensor instead of a ModelOutput."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=input_ids, use_cache=False).logits


class LastHiddenState(nn.Module):
    """Wraps an encoder so forward returns ``last_hidden_state`` as a plain tensor."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.encoder(*args, **kwargs).last_hidden_state


def build_gpt2() -> Built:
    """GPT2LMHeadModel, 2 layers, d=64, 4 heads, vocab 512, on input_ids [2, 32]; returns logits."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=512, n_positions=64, n_embd=64, n_layer=2, n_head=4,
        bos_token_id=511, eos_token_id=511,  # the default 50256 lies outside the small vocab
        attn_implementation="sdpa",
    )
    model = LogitsOnly(GPT2LMHeadModel(config)).eval()
    input_ids = torch.randint(0, config.vocab_size, (2, 32))
    return model, (input_ids,), {}


def build_bert() -> Built:
    """BertModel, 2 layers, d=64, 4 heads, on input_ids [2, 32] whose second row is half padding."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=64, attn_implementation="sdpa",
    )
    model = LastHiddenState(BertModel(config, add_pooling_layer=False)).eval()
    input_ids = torch.randint(1, config.vocab_size, (2, 32))
    attention_mask = torch.ones(2, 32, dtype=torch.long)
    attention_mask[1, 16:] = 0
    input_ids[1, 16:] = config.pad_token_id
    return model, (), {"input_ids": input_ids, "attention_mask": attention_mask}


def build_vit() -> Built:
    """ViTModel, 2 layers, d=64, 4 heads, 32x32 images in 8x8 patches (16 patches + CLS)."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32, patch_size=8, num_channels=3, hidden_size=64, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=128, attn_implementation="sdpa",
    )
    model = LastHiddenState(ViTModel(config, add_pooling_layer=False)).eval()
    return model, (), {"pixel_values": torch.randn(2, 3, 32, 32)}


# ---------------------------------------------------------------------------------------------------
# Hand-written LLaMA-style decoder


class RMSNorm(nn.Module):
    """RMSNorm spelled out as ``x * rsqrt(mean(x^2) + eps) * w`` (no fused op to lean on)."""

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Rotary helper: (x1, x2) -> (-x2, x1) over the last dimension's two halves."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class LlamaAttention(nn.Module):
    """Grouped-query attention (repeat_interleave of KV heads) with rotary embeddings and SDPA."""

    def __init__(self, d: int, n_heads: int, n_kv_heads: int):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, d // n_heads
        self.q_proj = nn.Linear(d, n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        groups = self.n_heads // self.n_kv_heads
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class SwiGLU(nn.Module):
    """LLaMA MLP: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.gate = nn.Linear(d, hidden, bias=False)
        self.up = nn.Linear(d, hidden, bias=False)
        self.down = nn.Linear(hidden, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class LlamaLayer(nn.Module):
    """Pre-norm decoder layer: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, d: int, n_heads: int, n_kv_heads: int, hidden: int):
        super().__init__()
        self.attn_norm = RMSNorm(d)
        self.attn = LlamaAttention(d, n_heads, n_kv_heads)
        self.mlp_norm = RMSNorm(d)
        self.mlp = SwiGLU(d, hidden)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
    """A LLaMA-style decoder: embedding, layers with RoPE (cos/sin as buffers), final RMSNorm, LM head."""

    def __init__(self, vocab: int = 512, d: int = 64, n_layers: int = 2, n_heads: int = 4,
                 n_kv_heads: int = 2, hidden: int = 172, max_seq: int = 64, theta: float = 10000.0):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(
            LlamaLayer(d, n_heads, n_kv_heads, hidden) for _ in range(n_layers)
        )
        self.norm = RMSNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        head_dim = d // n_heads
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
        freqs = torch.outer(torch.arange(max_seq).float(), inv_freq)
        angles = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        cos, sin = self.cos[:t], self.sin[:t]
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))


def build_llama() -> Built:
    """Llama, 2 layers, d=64, 4 query heads over 2 KV heads, on input_ids [2, 32]; returns logits."""
    torch.manual_seed(0)
    model = Llama().eval()
    return model, (torch.randint(0, 512, (2, 32)),), {}


# ---------------------------------------------------------------------------------------------------
# Attention in its different spellings (what recognize-attention must catch)


class _Heads(nn.Module):
    """Shared base: fused qkv projection split into heads, and the output projection."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        return tuple(y.view(b, t, self.heads, self.head_dim).transpose(1, 2) for y in (q, k, v))

    def merge(self, y: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = y.shape
        return self.proj(y.transpose(1, 2).reshape(b, t, -1))


class AttnSDPA(_Heads):
    """Causal attention through ``F.scaled_dot_product_attention(is_causal=True)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split(x)
        return self.merge(F.scaled_dot_product_attention(q, k, v, is_causal=True))


class AttnMaskedFill(_Heads):
    """Causal attention by hand: ``q@kᵀ/sqrt(d)``, ``masked_fill(tril == 0, -inf)``, softmax, ``@ v``."""

    def __init__(self, d: int, heads: int, max_seq: int):
        super().__init__(d, heads)
        self.register_buffer("tril", torch.tril(torch.ones(max_seq, max_seq)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split(x)
        t = x.shape[1]
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(self.tril[:t, :t] == 0, float("-inf"))
        return self.merge(torch.softmax(scores, dim=-1) @ v)


class AttnAdditive(_Heads):
    """Causal attention by hand with an additive 0/-inf mask from ``triu(full(-inf), diagonal=1)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split(x)
        t = x.shape[1]
        mask = torch.triu(torch.full((t, t), float("-inf"), device=x.device, dtype=x.dtype), diagonal=1)
        scores = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5 + mask
        return self.merge(torch.softmax(scores, dim=-1) @ v)


def build_attn_sdpa() -> Built:
    """AttnSDPA, d=64, 4 heads, on x [2, 32, 64]."""
    torch.manual_seed(0)
    return AttnSDPA(64, 4).eval(), (torch.randn(2, 32, 64),), {}


def build_attn_masked_fill() -> Built:
    """AttnMaskedFill, d=64, 4 heads, on x [2, 32, 64]."""
    torch.manual_seed(0)
    return AttnMaskedFill(64, 4, max_seq=64).eval(), (torch.randn(2, 32, 64),), {}


def build_attn_additive() -> Built:
    """AttnAdditive, d=64, 4 heads, on x [2, 32, 64]."""
    torch.manual_seed(0)
    return AttnAdditive(64, 4).eval(), (torch.randn(2, 32, 64),), {}


# ---------------------------------------------------------------------------------------------------
# Blocks with size parameters (benchmarks build the big ones, the zoo the small ones)


class GPTBlock(nn.Module):
    """Pre-LN GPT block: x + proj(masked_fill causal attn(LN(x))), then x + MLP-4x-GELU(tanh)(LN(x))."""

    def __init__(self, d: int, heads: int, max_seq: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = AttnMaskedFill(d, heads, max_seq)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.out = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class MLPBlock(nn.Module):
    """Transformer MLP: Linear d->4d, GELU, Linear 4d->d (the GEMM→activation→GEMM block)."""

    def __init__(self, d: int):
        super().__init__()
        self.fc = nn.Linear(d, 4 * d)
        self.out = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.gelu(self.fc(x)))


def gpt_block(d: int = 64, heads: int = 4, batch: int = 2, seq: int = 32,
              dtype: torch.dtype = torch.float32) -> Built:
    """GPTBlock of width ``d`` on x [batch, seq, d]; benchmarks use d=1024, heads=16, batch=8, seq=1024."""
    torch.manual_seed(0)
    model = GPTBlock(d, heads, max_seq=seq).to(dtype).eval()
    return model, (torch.randn(batch, seq, d, dtype=dtype),), {}


def gpt2_124m(batch: int = 8, seq: int = 1024, dtype: torch.dtype = torch.bfloat16) -> Built:
    """GPT-2 small at its real size (12 layers, d=768, 12 heads, vocab 50257, 1024 positions; random weights) on
    input_ids [batch, seq]; returns logits. The realistic GPU benchmark: batch 8 x 1024 tokens in bf16."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_positions=max(1024, seq), attn_implementation="sdpa", use_cache=False)
    model = LogitsOnly(GPT2LMHeadModel(config)).to(dtype).eval()
    return model, (torch.randint(0, config.vocab_size, (batch, seq)),), {}


def mlp_block(d: int = 64, tokens: int = 64, dtype: torch.dtype = torch.float32) -> Built:
    """MLPBlock of width ``d`` on x [tokens, d]."""
    torch.manual_seed(0)
    model = MLPBlock(d).to(dtype).eval()
    return model, (torch.randn(tokens, d, dtype=dtype),), {}


# ---------------------------------------------------------------------------------------------------
# Registry


def _entries() -> list[ZooEntry]:
    """The zoo, in one list; tolerances are for fp32 compiled-vs-eager comparisons."""
    return [
        ZooEntry("mlp", build_mlp, 1e-5, 1e-4, "LayerNorm + Linear-GELU-Linear-ReLU-Linear"),
        ZooEntry("resnet", build_resnet, 1e-4, 1e-4,
                 "hand-written ResNet: stem, 2 basic blocks, 1 downsampling block, on 32x32"),
        ZooEntry("gpt2", build_gpt2, 1e-4, 1e-4, "transformers GPT2LMHeadModel (sdpa), logits"),
        ZooEntry("bert", build_bert, 1e-4, 1e-4,
                 "transformers BertModel (sdpa) with a padding mask, last_hidden_state"),
        ZooEntry("vit", build_vit, 1e-4, 1e-4,
                 "transformers ViTModel (sdpa), 32x32 images in 8x8 patches"),
        ZooEntry("llama", build_llama, 1e-4, 1e-4,
                 "hand-written LLaMA: RMSNorm, RoPE, SwiGLU, GQA 4/2 via repeat_interleave"),
        ZooEntry("attn_sdpa", build_attn_sdpa, 1e-5, 1e-4, "causal attention via F.sdpa"),
        ZooEntry("attn_masked_fill", build_attn_masked_fill, 1e-5, 1e-4,
                 "causal attention by hand with masked_fill on a tril buffer"),
        ZooEntry("attn_additive", build_attn_additive, 1e-5, 1e-4,
                 "causal attention by hand with an additive triu(-inf) mask"),
        ZooEntry("gpt_block", gpt_block, 1e-5, 1e-4,
                 "hand-written pre-LN GPT block, masked_fill attention, tanh-GELU MLP"),
        ZooEntry("mlp_block", mlp_block, 1e-5, 1e-4, "Linear d->4d, GELU, Linear 4d->d"),
    ]


ZOO: dict[str, ZooEntry] = {e.name: e for e in _entries()}


def get(name: str) -> ZooEntry:
    """The zoo entry called ``name``; an unknown name is a ValueError that lists the known ones."""
    try:
        return ZOO[name]
    except KeyError:
        known = ", ".join(sorted(ZOO))
        raise ValueError(f"unknown zoo model {name!r}; known models: {known}") from None
