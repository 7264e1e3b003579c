"""Layer parity of kerastl's Adapter, SimAdapter and encoder layer with NeuralSpeech AdapterASR's
(e2e_asr_adaptertransformer.py, over ESPnet): the same weights copied from the reference's
PyTorch modules, the same inputs, then outputs and gradients compared.

Compared, each in float32 and float64:
- `adapter`: `Adapter` vs the reference's `Adapter` (z + up(ReLU(down(LN(z))))): output,
  gradients of a fixed linear read-out with respect to the input and every weight;
- `simadapter`: `SimAdapter` vs the reference's `SimAdapter` called as its encoder layer
  calls it (query: the layer output, keys and values: the adapter outputs, residual: the
  layer's feed-forward input): output, attention averaged over batch and time, the
  stability regulariser and the guide loss (the reference model's own
  `get_fusion_regularization_loss` / `get_fusion_guide_loss`), gradients of output and
  losses;
- `encoder_layer`: `ASREncoder.run_layer` vs ESPnet's pre-norm layer as the reference
  subclasses it (`CustomEncoderLayer`, which also returns `x_norm`): output and feed-forward
  input, with a padding mask;
- `fused_layer`: the whole fused layer, the reference's `AdaptiveEncoderLayer` with two
  source adapters (bottleneck 128), the target's (64) and a SimAdapter, vs kerastl's
  encoder layer + `CTCRecognizer`'s fusion step (the same code path as training): output
  and gradients.

The reference module imports ESPnet (installed without its requirements: `pip install
--no-deps espnet==202511`) and, at load time only, packages its layers never use; those are
stubbed (`REFERENCE_STUBS`). ESPnet's LayerNorm has epsilon 1e-12: the kerastl layers are
built with that epsilon here (kerastl's default is 1e-5).

Usage (parity environment):
  python -m benchmarks.parity.adapters --reference /path/to/NeuralSpeech/AdapterASR
  KERASTL_REF_ADAPTERASR=/path/to/AdapterASR python -m benchmarks.parity.adapters
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.parity import common  # noqa: E402

REFERENCE = "AdapterASR"
REPOSITORY = "https://github.com/microsoft/NeuralSpeech (AdapterASR)"
# Imported by the reference's module chain at load time, never used by the layers compared.
REFERENCE_STUBS = ("configargparse", "kaldiio", "sentencepiece", "librosa", "torch_complex", "torchaudio",
                   "flash_attn", "chainer")
ESPNET_EPSILON = 1e-12
TOLERANCE = {"float32": 1e-5, "float64": 1e-8}
SOURCES, TARGET = ["it", "ru"], "uk"          # sorted: the target is last on both sides
DIM, HEADS, FF, BATCH, TIME = 16, 2, 32, 3, 7


def load_reference(folder: str):
    """The reference's `e2e_asr_adaptertransformer` module (ESPnet installed, stubs for the rest)."""
    with common.stub_modules(REFERENCE_STUBS), common.on_path(folder):
        import e2e_asr_adaptertransformer as module
    return module


def relative_error(ours, reference, scale: float = 0.0) -> float:
    """max |ours - reference| / max(max |reference|, scale)."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.abs(ours - reference).max() / max(np.abs(reference).max(), scale, 1e-30))


class Comparison:
    """Rows (case, dtype, quantity, relative error, ok) with the dtype's tolerance."""

    def __init__(self):
        self.rows = []

    def add(self, case, dtype, quantity, ours, reference, scale: float = 0.0):
        error = relative_error(ours, reference, scale)
        self.rows.append({"case": case, "dtype": dtype, "quantity": quantity, "relative_error": error,
                          "ok": error <= TOLERANCE[dtype]})

    @property
    def ok(self) -> bool:
        return all(row["ok"] for row in self.rows)


def copy_pairs(pairs):
    """Copies torch tensors into Keras variables: `[(keras_variable, torch_tensor, to_keras)]`."""
    for variable, tensor, to_keras in pairs:
        variable.assign(to_keras(tensor.detach().cpu().numpy()).astype(variable.dtype))


def pairs_of(layer, module):
    """Dense <-> nn.Linear or LayerNormalization <-> LayerNorm (common.tensor_pairs checks the match)."""
    return [(variable, tensor, to_keras) for variable, tensor, _, to_keras in common.tensor_pairs(layer, module)]


def attention_pairs(layer, attention):
    """keras MultiHeadAttention <-> ESPnet MultiHeadedAttention (linear_q/k/v/out)."""
    heads, size = HEADS, DIM // HEADS

    def projection(kernel, bias, linear):
        return [(kernel, linear.weight, lambda w: w.T.reshape(DIM, heads, size)),
                (bias, linear.bias, lambda b: b.reshape(heads, size))]

    pairs = []
    for dense, linear in ((layer._query_dense, attention.linear_q), (layer._key_dense, attention.linear_k),
                          (layer._value_dense, attention.linear_v)):
        pairs += projection(dense.kernel, dense.bias, linear)
    out = layer._output_dense
    return pairs + [(out.kernel, attention.linear_out.weight, lambda w: w.T.reshape(heads, size, DIM)),
                    (out.bias, attention.linear_out.bias, lambda b: b)]


def encoder_layer_pairs(encoder, reference_layer):
    layer = encoder.transformer_layers[0]
    return (attention_pairs(layer._self_attention_layer, reference_layer.self_attn)
            + pairs_of(layer._self_attention_layer_norm, reference_layer.norm1)
            + pairs_of(layer._feedforward_layer_norm, reference_layer.norm2)
            + pairs_of(layer._feedforward_intermediate_dense, reference_layer.feed_forward.w_1)
            + pairs_of(layer._feedforward_output_dense, reference_layer.feed_forward.w_2))


def adapter_pairs(adapter, reference_adapter):
    return (pairs_of(adapter.layer_norm, reference_adapter.layer_norm)
            + pairs_of(adapter.down, reference_adapter.down_project)
            + pairs_of(adapter.up, reference_adapter.up_project))


def simadapter_pairs(fusion, reference_fusion):
    return (pairs_of(fusion.query, reference_fusion.linear_q) + pairs_of(fusion.key, reference_fusion.linear_k)
            + [(fusion.value_kernel, reference_fusion.linear_v.weight, np.transpose)])


def compare_gradients(comparison, case, dtype, tape_loss, tape, pairs, inputs_pair, reference_loss):
    """Gradients of a scalar on both sides: inputs and every copied weight (Keras layout).
    Each is measured against the largest reference gradient of the case too: gradients that
    vanish analytically (a key bias adds the same score to every key, which the softmax
    ignores) are rounding noise on both sides."""
    variables = [variable for variable, _, _ in pairs]
    keras_inputs, torch_inputs = inputs_pair
    ours = tape.gradient(tape_loss, [*keras_inputs, *variables])
    import torch

    theirs = torch.autograd.grad(reference_loss, [*torch_inputs, *[t for _, t, _ in pairs]])
    scale = max(float(np.abs(ref.detach().numpy()).max()) for ref in theirs)
    for i, (grad, ref) in enumerate(zip(ours[:len(keras_inputs)], theirs[:len(torch_inputs)])):
        comparison.add(case, dtype, f"grad input {i}", grad.numpy(), ref.detach().numpy(), scale)
    for (variable, _, to_keras), grad, ref in zip(pairs, ours[len(keras_inputs):], theirs[len(torch_inputs):]):
        comparison.add(case, dtype, f"grad {variable.path}", np.asarray(grad), to_keras(ref.detach().numpy()), scale)


def arrays(rng, dtype, *shapes):
    return [rng.normal(size=shape).astype(dtype) for shape in shapes]


def run_adapter(reference, comparison, dtype, rng):
    import tensorflow as tf
    import torch

    from kerastl.adapters.adapter import Adapter

    torch_module = reference.Adapter(8, DIM).to(getattr(torch, dtype))
    with torch.no_grad():
        for p in torch_module.layer_norm.parameters():       # non-trivial gain and bias
            p.add_(torch.as_tensor(rng.normal(size=p.shape) * 0.1))
    adapter = Adapter(8, epsilon=ESPNET_EPSILON)
    adapter.build((None, None, DIM))
    pairs = adapter_pairs(adapter, torch_module)
    copy_pairs(pairs)
    z, readout = arrays(rng, dtype, (BATCH, TIME, DIM), (BATCH, TIME, DIM))
    z_torch = torch.tensor(z, requires_grad=True)
    reference_out = torch_module(z_torch)
    z_keras = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(z_keras)
        out = adapter(z_keras)
        loss = tf.reduce_sum(out * readout)
    comparison.add("adapter", dtype, "output", out.numpy(), reference_out.detach().numpy())
    compare_gradients(comparison, "adapter", dtype, loss, tape, pairs, ([z_keras], [z_torch]),
                      (reference_out * torch.tensor(readout)).sum())


def reference_model_stub(reference, fusion_modules, language):
    """What the reference model's loss methods read from `self`: its layers' SimAdapters."""
    import torch

    languages = sorted([*SOURCES, TARGET])
    layers = [types.SimpleNamespace(sim_adapter=torch.nn.ModuleDict({"_".join(languages): m})) for m in fusion_modules]
    parameters = list(fusion_modules[0].parameters())
    return types.SimpleNamespace(fusion_languages=languages, adim=DIM, encoder=types.SimpleNamespace(encoders=layers),
                                 decoder=types.SimpleNamespace(decoders=[]), parameters=lambda: iter(parameters))


def run_simadapter(reference, comparison, dtype, rng):
    import tensorflow as tf
    import torch

    from kerastl.adapters.simadapter import SimAdapter

    sources = len(SOURCES) + 1
    torch_module = reference.SimAdapter(DIM, 0.0, sorted([*SOURCES, TARGET])).to(getattr(torch, dtype))
    with torch.no_grad():                                       # W_V away from the identity
        torch_module.linear_v.weight.add_(torch.as_tensor(rng.normal(size=(DIM, DIM)) * 0.1))
    fusion = SimAdapter(guide_weight=1.0, guide_index=sources - 1)
    fusion.build((None, None, DIM), (None, None, sources, DIM))
    pairs = simadapter_pairs(fusion, torch_module)
    copy_pairs(pairs)
    z, outputs, residual, readout = arrays(rng, dtype, (BATCH, TIME, DIM), (BATCH, TIME, sources, DIM),
                                           (BATCH, TIME, DIM), (BATCH, TIME, DIM))
    torch_inputs = [torch.tensor(a, requires_grad=True) for a in (z, outputs, residual)]
    reference_out = torch_module(torch_inputs[0], torch_inputs[1], torch_inputs[1], residual=torch_inputs[2])
    stub = reference_model_stub(reference, [torch_module], TARGET)
    reference_stability = reference.E2E.get_fusion_regularization_loss(stub)
    mean_attention = torch_module.attn.mean(axis=(0, 1)).detach().numpy()
    reference_guide = reference.E2E.get_fusion_guide_loss(stub, TARGET)
    keras_inputs = [tf.constant(a) for a in (z, outputs, residual)]
    with tf.GradientTape() as tape:
        for x in keras_inputs:
            tape.watch(x)
        out = fusion(*keras_inputs, training=True)
        stability, guide = fusion.losses
        total_loss = tf.reduce_sum(out * readout) + stability + guide
    comparison.add("simadapter", dtype, "output", out.numpy(), reference_out.detach().numpy())
    comparison.add("simadapter", dtype, "mean attention", fusion.last_attention, mean_attention)
    comparison.add("simadapter", dtype, "stability loss", stability.numpy(), reference_stability.detach().numpy())
    comparison.add("simadapter", dtype, "guide loss", guide.numpy(), reference_guide.detach().numpy())
    total = (reference_out * torch.tensor(readout)).sum() + reference_stability + reference_guide
    compare_gradients(comparison, "simadapter", dtype, total_loss, tape, pairs,
                      (keras_inputs, torch_inputs), total)


def reference_encoder_layer(reference, cls, dtype, **options):
    import torch
    from espnet.nets.pytorch_backend.transformer.attention import MultiHeadedAttention
    from espnet.nets.pytorch_backend.transformer.positionwise_feed_forward import PositionwiseFeedForward

    layer = cls(size=DIM, self_attn=MultiHeadedAttention(HEADS, DIM, 0.0),
                feed_forward=PositionwiseFeedForward(DIM, FF, 0.0), dropout_rate=0.0, normalize_before=True,
                concat_after=False, **options)
    with torch.no_grad():                                       # non-trivial LayerNorm gains and biases
        for norm in (layer.norm1, layer.norm2):
            for p in norm.parameters():
                p.add_(torch.randn(p.shape, dtype=p.dtype) * 0.1)
    return layer.to(getattr(torch, dtype)).eval()


def padding(lengths):
    return np.arange(TIME)[None, :] < np.asarray(lengths)[:, None]


def run_encoder_layer(reference, comparison, dtype, rng):
    import tensorflow as tf
    import torch

    from kerastl.nets.asr_encoder import ASREncoder

    torch.manual_seed(int(rng.integers(1 << 30)))
    torch_layer = reference_encoder_layer(reference, reference.CustomEncoderLayer, dtype)
    encoder = ASREncoder(num_layers=1, hidden_dim=DIM, num_heads=HEADS, intermediate_dim=FF, dropout=0.0,
                         layer_norm_epsilon=ESPNET_EPSILON)
    encoder.build()
    copy_pairs(encoder_layer_pairs(encoder, torch_layer))
    (x,) = arrays(rng, dtype, (BATCH, TIME, DIM))
    mask = padding([TIME, 5, 3])
    reference_out, reference_normalized, _ = torch_layer(torch.tensor(x), torch.tensor(mask)[:, None, :])
    out, normalized = encoder.run_layer(0, tf.constant(x), tf.constant(mask))
    comparison.add("encoder_layer", dtype, "output", out.numpy(), reference_out.detach().numpy())
    comparison.add("encoder_layer", dtype, "feed-forward input (x_norm)", normalized.numpy(),
                   reference_normalized.detach().numpy())


def run_fused_layer(reference, comparison, dtype, rng):
    import tensorflow as tf
    import torch

    from kerastl.adapters.adapter import Adapter
    from kerastl.adapters.model import MultilingualASR
    from kerastl.nets.asr_encoder import ASREncoder

    languages = sorted([*SOURCES, TARGET])
    torch.manual_seed(int(rng.integers(1 << 30)))
    fusion_module = torch.nn.ModuleDict({"_".join(languages): reference.SimAdapter(DIM, 0.0, languages)})
    torch_layer = reference_encoder_layer(reference, reference.AdaptiveEncoderLayer, dtype, languages=languages,
                                          sim_adapter_layer=fusion_module)
    with torch.no_grad():
        fusion_module["_".join(languages)].linear_v.weight.add_(torch.randn(DIM, DIM, dtype=getattr(torch, dtype)) * 0.1)
    dims = {lang: torch_layer.adapters[lang].down_project.out_features for lang in languages}
    asr = MultilingualASR({lang: 5 for lang in languages}, num_layers=1, hidden_dim=DIM, num_heads=HEADS,
                          intermediate_dim=FF, dropout=0.0, adapter_dims=dims)
    # ESPnet's LayerNorm epsilon in the encoder layer and the adapters (the rest as built)
    asr.encoder = ASREncoder(num_layers=1, hidden_dim=DIM, num_heads=HEADS, intermediate_dim=FF, dropout=0.0,
                             layer_norm_epsilon=ESPNET_EPSILON, name="encoder")
    asr.encoder.build()
    for lang in languages:
        asr.adapters[lang] = [Adapter(dims[lang], epsilon=ESPNET_EPSILON, name=f"adapter_{lang}_0")]
        asr.adapters[lang][0].build((None, None, DIM))
    fused = asr.recognizer(TARGET, "simadapter", sources=SOURCES)
    fusion = asr.fusions[TARGET][0]
    pairs = encoder_layer_pairs(asr.encoder, torch_layer)
    for lang in languages:
        pairs += adapter_pairs(asr.adapters[lang][0], torch_layer.adapters[lang])
    pairs += simadapter_pairs(fusion, fusion_module["_".join(languages)])
    if fusion.value_kernel.dtype != dtype:
        raise ValueError(f"fusion layer in {fusion.value_kernel.dtype}, expected {dtype}")
    copy_pairs(pairs)
    x, readout = arrays(rng, dtype, (BATCH, TIME, DIM), (BATCH, TIME, DIM))
    mask = padding([TIME, 6, 4])
    x_torch = torch.tensor(x, requires_grad=True)
    reference_out = torch_layer(x_torch, torch.tensor(mask)[:, None, :], TARGET)[0]
    x_keras = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_keras)
        out, normalized = asr.encoder.run_layer(0, x_keras, tf.constant(mask))
        out = fused._after_layer(0, out, tf.constant(mask), False, normalized)
        loss = tf.reduce_sum(out * readout)
    comparison.add("fused_layer", dtype, "output", out.numpy(), reference_out.detach().numpy())
    compare_gradients(comparison, "fused_layer", dtype, loss, tape, pairs, ([x_keras], [x_torch]),
                      (reference_out * torch.tensor(readout)).sum())


CASES = {"adapter": run_adapter, "simadapter": run_simadapter, "encoder_layer": run_encoder_layer,
         "fused_layer": run_fused_layer}


def run(reference_folder: str, dtypes=("float32", "float64"), seed: int = 0) -> Comparison:
    import torch

    reference = load_reference(reference_folder)
    comparison = Comparison()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)        # the reference modules' own initialisation
    for dtype in dtypes:
        for case in CASES.values():
            # float64: every Keras layer built in the case computes in float64 (the global policy)
            with common.keras_float64() if dtype == "float64" else contextlib.nullcontext():
                case(reference, comparison, dtype, rng)
    return comparison


def markdown(comparison: Comparison, info: dict) -> str:
    lines = ["# Adapter layers: kerastl vs NeuralSpeech AdapterASR (ESPnet)", "",
             f"Reference: {info.get('repository')} at commit {info.get('commit')}; ESPnet "
             f"{common.reference_info('espnet')['version']} (installed without its requirements). "
             "Same weights (copied from the reference's modules), same inputs; relative error = max |ours - "
             "reference| / max |reference| (gradients: or the case's largest reference gradient, if larger); "
             "tolerance 1e-5 (float32) and 1e-8 (float64).", "",
             "| case | dtype | quantities | worst quantity | worst relative error | ok |", "|---|---|---|---|---|---|"]
    groups = {}
    for row in comparison.rows:
        groups.setdefault((row["case"], row["dtype"]), []).append(row)
    for (case, dtype), rows in groups.items():
        worst = max(rows, key=lambda r: r["relative_error"])
        lines.append(f"| {case} | {dtype} | {len(rows)} | {worst['quantity']} | {worst['relative_error']:.1e} | "
                     f"{'yes' if all(r['ok'] for r in rows) else 'NO'} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", default=None, help="a NeuralSpeech checkout's AdapterASR folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folder = common.reference_dir(REFERENCE, args.reference)
    record = common.start_record(__file__)
    comparison = run(folder, seed=args.seed)
    info = common.reference_info(folder, REPOSITORY)
    content = {"reference": info, "espnet": common.reference_info("espnet"), "seed": args.seed,
               "tolerance": TOLERANCE, "rows": comparison.rows, "ok": comparison.ok}
    paths = common.write_results("adapters", content, markdown(comparison, info), record)
    print(markdown(comparison, info))
    print("\n".join(paths))
    return 0 if comparison.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
