"""Tiny GGUF files written in the test, and a NumPy reference forward pass.

The reference follows llama.cpp's semantics on the *raw* GGUF tensors
(interleaved rotary pairs on the permuted q/k rows, grouped-query heads,
RMSNorm, SwiGLU), independently of the converter's re-layout.
"""

import gguf
import numpy as np

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# A few merges over GPT-2's byte-to-unicode alphabet ("Ġ" is a space).
MERGES = [
    "Ġ t",
    "h e",
    "Ġt he",
    "i s",
    "Ġ is",
    "Ġ c",
    "a t",
    "Ġc at",
    "o n",
    "Ġ on",
    "Ġ m",
    "Ġm at",
    "e r",
    "i n",
]


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable unicode character table."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return [chr(c) for c in chars]


def tiny_vocabulary():
    """Special tokens, all 256 byte symbols, then one token per merge."""
    tokens = SPECIAL_TOKENS + bytes_to_unicode()
    for merge in MERGES:
        a, b = merge.split(" ")
        tokens.append(a + b)
    return tokens


def write_tiny_llama_gguf(
    path,
    num_layers=2,
    hidden=16,
    heads=4,
    kv_heads=2,
    ffn=32,
    rope_base=50000.0,
    eps=1e-5,
    tied=True,
    quantized=True,
    arch="llama",
    skip_tensor=None,
    wrong_shape_tensor=None,
    extra_tensor=None,
    skip_metadata=None,
    seed=0,
):
    """Write a tiny random Llama GGUF file; returns the path as str.

    With `quantized`, layer 0's `ffn_down` is stored as Q8_0, layer 1's as
    Q4_1 and layer 0's `attn_v` as F16; everything else is F32.
    """
    path = str(path)
    rng = np.random.default_rng(seed)
    tokens = tiny_vocabulary()
    vocab = len(tokens)
    head_dim = hidden // heads
    writer = gguf.GGUFWriter(path, arch)
    meta = {
        "block_count": lambda: writer.add_block_count(num_layers),
        "context_length": lambda: writer.add_context_length(128),
        "embedding_length": lambda: writer.add_embedding_length(hidden),
        "feed_forward_length": lambda: writer.add_feed_forward_length(ffn),
        "head_count": lambda: writer.add_head_count(heads),
        "head_count_kv": lambda: writer.add_head_count_kv(kv_heads),
        "rope_freq_base": lambda: writer.add_rope_freq_base(rope_base),
        "rms_eps": lambda: writer.add_layer_norm_rms_eps(eps),
        "rope_dimension_count": lambda: writer.add_rope_dimension_count(
            head_dim
        ),
    }
    for key, add in meta.items():
        if key != skip_metadata:
            add()
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [3] * len(SPECIAL_TOKENS) + [1] * (vocab - len(SPECIAL_TOKENS))
    )
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)

    def weight(*shape, scale=0.3):
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    tensors = {"token_embd.weight": weight(vocab, hidden, scale=1.0)}
    for i in range(num_layers):
        p = f"blk.{i}."
        tensors[p + "attn_norm.weight"] = 1.0 + weight(hidden, scale=0.1)
        tensors[p + "attn_q.weight"] = weight(heads * head_dim, hidden)
        tensors[p + "attn_k.weight"] = weight(kv_heads * head_dim, hidden)
        tensors[p + "attn_v.weight"] = weight(kv_heads * head_dim, hidden)
        tensors[p + "attn_output.weight"] = weight(hidden, heads * head_dim)
        tensors[p + "ffn_norm.weight"] = 1.0 + weight(hidden, scale=0.1)
        tensors[p + "ffn_gate.weight"] = weight(ffn, hidden)
        tensors[p + "ffn_up.weight"] = weight(ffn, hidden)
        tensors[p + "ffn_down.weight"] = weight(hidden, ffn)
    tensors["output_norm.weight"] = 1.0 + weight(hidden, scale=0.1)
    if not tied:
        tensors["output.weight"] = weight(vocab, hidden)
    if extra_tensor is not None:
        tensors[extra_tensor] = weight(hidden)
    if wrong_shape_tensor is not None:
        rows, cols = tensors[wrong_shape_tensor].shape
        tensors[wrong_shape_tensor] = weight(rows + 2, cols)
    types = {}
    if quantized:
        types["blk.0.ffn_down.weight"] = gguf.GGMLQuantizationType.Q8_0
        types["blk.0.attn_v.weight"] = gguf.GGMLQuantizationType.F16
        if num_layers > 1:
            types["blk.1.ffn_down.weight"] = gguf.GGMLQuantizationType.Q4_1
    for name, array in tensors.items():
        if name == skip_tensor:
            continue
        qtype = types.get(name)
        if qtype is None:
            writer.add_tensor(name, array)
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, array.astype(np.float16))
        else:
            writer.add_tensor(
                name, gguf.quants.quantize(array, qtype), raw_dtype=qtype
            )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def read_raw_tensors(path):
    """All tensors of a GGUF file, dequantized, NumPy shape (ne1, ne0)."""
    reader = gguf.GGUFReader(path)
    out = {}
    for t in reader.tensors:
        array = gguf.quants.dequantize(t.data, t.tensor_type)
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        out[t.name] = np.asarray(array, np.float32).reshape(shape)
    return out, reader


def _rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope_interleaved(x, base):
    """llama.cpp 'normal' rope: rotate pairs (2i, 2i+1). x: (T, H, D)."""
    t, _, d = x.shape
    inv = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    angle = np.arange(t)[:, None] * inv[None, :]  # (T, D/2)
    cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def _rope_rotate_half(x, base):
    """Rotate-half rope: pairs (i, i + D/2). x: (T, H, D)."""
    t, _, d = x.shape
    inv = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    angle = np.arange(t)[:, None] * inv[None, :]
    cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
    a, b = x[..., : d // 2], x[..., d // 2 :]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)


def reference_llama_logits(path, token_ids, rope="interleaved"):
    """Logits (T, vocab) of a Llama GGUF file for one unpadded sequence.

    `rope="rotate_half"` applies the wrong convention to the raw rows; it
    exists to show the test model is sensitive to the q/k row order.
    """
    w, reader = read_raw_tensors(path)
    arch = reader.fields["general.architecture"].contents()

    def meta(key):
        return reader.fields[f"{arch}.{key}"].contents()

    heads = meta("attention.head_count")
    kv_heads = meta("attention.head_count_kv")
    eps = meta("attention.layer_norm_rms_epsilon")
    base = meta("rope.freq_base")
    apply_rope = (
        _rope_interleaved if rope == "interleaved" else (_rope_rotate_half)
    )
    x = w["token_embd.weight"][np.asarray(token_ids)].astype(np.float64)
    t, hidden = x.shape
    head_dim = hidden // heads
    group = heads // kv_heads
    causal = np.tril(np.ones((t, t), bool))
    for i in range(meta("block_count")):
        p = f"blk.{i}."
        h = _rms_norm(x, w[p + "attn_norm.weight"], eps)
        q = (h @ w[p + "attn_q.weight"].T).reshape(t, heads, head_dim)
        k = (h @ w[p + "attn_k.weight"].T).reshape(t, kv_heads, head_dim)
        v = (h @ w[p + "attn_v.weight"].T).reshape(t, kv_heads, head_dim)
        q, k = apply_rope(q, base), apply_rope(k, base)
        out = np.empty((t, heads, head_dim))
        for head in range(heads):
            kv = head // group  # query head -> its key/value head
            scores = q[:, head] @ k[:, kv].T / np.sqrt(head_dim)
            scores = np.where(causal, scores, -np.inf)
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            out[:, head] = probs @ v[:, kv]
        x = x + out.reshape(t, hidden) @ w[p + "attn_output.weight"].T
        h = _rms_norm(x, w[p + "ffn_norm.weight"], eps)
        gate = h @ w[p + "ffn_gate.weight"].T
        up = h @ w[p + "ffn_up.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "ffn_down.weight"].T
    x = _rms_norm(x, w["output_norm.weight"], eps)
    output = w.get("output.weight", w["token_embd.weight"])
    return x @ output.T


# --- Gemma 3 -----------------------------------------------------------------

GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
# Listed best-first (SentencePiece BPE merges the best-scored pair first).
GEMMA_PIECES = ["▁", "th", "ca", "cat", "▁cat", "he", "at", "the", "▁the"]
GEMMA_PIECES += list("abcdefghijklmnopqrstuvwxyz")


def tiny_gemma_vocabulary():
    """(tokens, scores, types) of a tiny SentencePiece BPE vocabulary."""
    tokens = GEMMA_SPECIALS + [f"<0x{b:02X}>" for b in range(256)]
    types = [3] * len(GEMMA_SPECIALS) + [6] * 256
    scores = [0.0] * len(tokens)
    for i, piece in enumerate(GEMMA_PIECES):
        tokens.append(piece)
        types.append(1)
        scores.append(-float(i))  # earlier pieces merge first
    return tokens, scores, types


def write_tiny_gemma3_gguf(
    path,
    num_layers=6,
    hidden=16,
    heads=4,
    kv_heads=2,
    head_dim=8,
    ffn=32,
    sliding_window=3,
    seed=0,
):
    """Write a tiny random Gemma 3 GGUF file (norms stored as 1 + w)."""
    path = str(path)
    rng = np.random.default_rng(seed)
    tokens, scores, types = tiny_gemma_vocabulary()
    vocab = len(tokens)
    writer = gguf.GGUFWriter(path, "gemma3")
    writer.add_block_count(num_layers)
    writer.add_context_length(128)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_sliding_window(sliding_window)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(True)

    def weight(*shape, scale=0.3):
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    def norm(dim):
        return 1.0 + weight(dim, scale=0.2)  # llama.cpp stores 1 + w

    writer.add_tensor("token_embd.weight", weight(vocab, hidden, scale=0.5))
    for i in range(num_layers):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", norm(hidden))
        writer.add_tensor(p + "attn_q.weight", weight(heads * head_dim, hidden))
        writer.add_tensor(p + "attn_q_norm.weight", norm(head_dim))
        writer.add_tensor(
            p + "attn_k.weight", weight(kv_heads * head_dim, hidden)
        )
        writer.add_tensor(p + "attn_k_norm.weight", norm(head_dim))
        v = weight(kv_heads * head_dim, hidden)
        # Layer 0 stores v as F16; every ffn_down is Q8_0.
        writer.add_tensor(
            p + "attn_v.weight", v.astype(np.float16) if i == 0 else v
        )
        writer.add_tensor(
            p + "attn_output.weight", weight(hidden, heads * head_dim)
        )
        writer.add_tensor(p + "post_attention_norm.weight", norm(hidden))
        writer.add_tensor(p + "ffn_norm.weight", norm(hidden))
        writer.add_tensor(p + "ffn_gate.weight", weight(ffn, hidden))
        writer.add_tensor(p + "ffn_up.weight", weight(ffn, hidden))
        down = weight(hidden, ffn)
        qtype = gguf.GGMLQuantizationType.Q8_0
        writer.add_tensor(
            p + "ffn_down.weight",
            gguf.quants.quantize(down, qtype),
            raw_dtype=qtype,
        )
        writer.add_tensor(p + "post_ffw_norm.weight", norm(hidden))
    writer.add_tensor("output_norm.weight", norm(hidden))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def reference_gemma3_logits(path, token_ids):
    """llama.cpp-semantics Gemma 3 forward pass on the raw GGUF tensors."""
    w, reader = read_raw_tensors(path)

    def meta(key):
        return reader.fields[f"gemma3.{key}"].contents()

    heads = meta("attention.head_count")
    kv_heads = meta("attention.head_count_kv")
    head_dim = meta("attention.key_length")
    eps = meta("attention.layer_norm_rms_epsilon")
    window = meta("attention.sliding_window")
    embedding = w["token_embd.weight"].astype(np.float64)
    x = embedding[np.asarray(token_ids)]
    t, hidden = x.shape
    x = x * np.sqrt(hidden)
    group = heads // kv_heads
    pos = np.arange(t)
    causal = pos[None, :] <= pos[:, None]
    for i in range(meta("block_count")):
        p = f"blk.{i}."
        is_global = (i + 1) % 6 == 0  # one global layer in six
        base = 1_000_000.0 if is_global else 10_000.0
        visible = (
            causal
            if is_global
            else causal & (pos[:, None] - pos[None, :] < window)
        )
        # GGUF norm weights already hold 1 + w: multiply directly.
        h = _rms_norm(x, w[p + "attn_norm.weight"], eps)
        q = (h @ w[p + "attn_q.weight"].T).reshape(t, heads, head_dim)
        k = (h @ w[p + "attn_k.weight"].T).reshape(t, kv_heads, head_dim)
        v = (h @ w[p + "attn_v.weight"].T).reshape(t, kv_heads, head_dim)
        q = _rms_norm(q, w[p + "attn_q_norm.weight"], eps)
        k = _rms_norm(k, w[p + "attn_k_norm.weight"], eps)
        q, k = _rope_rotate_half(q, base), _rope_rotate_half(k, base)
        out = np.empty((t, heads, head_dim))
        for head in range(heads):
            kv = head // group
            scores = q[:, head] @ k[:, kv].T / np.sqrt(head_dim)
            scores = np.where(visible, scores, -np.inf)
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            out[:, head] = probs @ v[:, kv]
        attn = out.reshape(t, heads * head_dim) @ w[p + "attn_output.weight"].T
        x = x + _rms_norm(attn, w[p + "post_attention_norm.weight"], eps)
        h = _rms_norm(x, w[p + "ffn_norm.weight"], eps)
        gate = h @ w[p + "ffn_gate.weight"].T
        gelu = (
            0.5
            * gate
            * (1 + np.tanh(np.sqrt(2 / np.pi) * (gate + 0.044715 * gate**3)))
        )
        ffn = (gelu * (h @ w[p + "ffn_up.weight"].T)) @ w[
            p + "ffn_down.weight"
        ].T
        x = x + _rms_norm(ffn, w[p + "post_ffw_norm.weight"], eps)
    x = _rms_norm(x, w["output_norm.weight"], eps)
    return x @ embedding.T
