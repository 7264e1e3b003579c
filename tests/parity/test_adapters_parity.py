"""Layer parity of the Adapter, SimAdapter and the encoder layer with NeuralSpeech AdapterASR's
own modules (benchmarks/parity/adapters.py): the same weights and inputs, outputs and
gradients within tolerance in float32 and float64. Needs the reference checkout in
KERASTL_REF_ADAPTERASR (docs/parity.md) and ESPnet (tox.ini's parity environment)."""

import pytest

from parity import adapters, common


@pytest.fixture(scope="module")
def comparison():
    return adapters.run(common.reference_dir(adapters.REFERENCE))


def rows(comparison, case, dtype):
    return {row["quantity"]: row for row in comparison.rows if row["case"] == case and row["dtype"] == dtype}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(adapters.CASES))
def test_outputs_and_gradients_agree(comparison, case, dtype):
    found = rows(comparison, case, dtype)
    assert "output" in found
    failing = {quantity: row["relative_error"] for quantity, row in found.items() if not row["ok"]}
    assert failing == {}


def test_every_quantity_is_compared(comparison):
    simadapter = rows(comparison, "simadapter", "float64")
    # the reference's own loss methods, the attention its plots average, every input and weight gradient
    assert {"mean attention", "stability loss", "guide loss", "grad input 0", "grad input 1", "grad input 2"} \
        <= set(simadapter)
    assert sum(q.startswith("grad ") and "value_kernel" in q for q in simadapter) == 1
    assert set(rows(comparison, "encoder_layer", "float32")) == {"output", "feed-forward input (x_norm)"}
    fused = rows(comparison, "fused_layer", "float32")
    # the encoder layer (attention 8, norms 4, feed-forward 4), three adapters (4 each), the fusion (5), the input
    assert len([q for q in fused if q.startswith("grad ")]) == 16 + 12 + 5 + 1
