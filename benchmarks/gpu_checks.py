"""GPU correctness checks for the Q-Former (run on a machine with a GPU).

For k = 1 and k = 8 CF tokens: the Q-Former in mixed bfloat16 (XLA-compiled
`predict` and `fit`) against the same weights in float32, every mode. Prints
one line per check; exits non-zero on a failure.

    KERAS_BACKEND=jax python benchmarks/gpu_checks.py
"""

import sys

import keras
import numpy as np

import ilm_keras


def build(dtype, num_cf_tokens):
    return ilm_keras.QFormer(
        vocabulary_size=500, cf_dim=32, num_layers=4, hidden_dim=128,
        num_heads=4, intermediate_dim=512, num_query_tokens=32,
        max_text_length=32, num_cf_tokens=num_cf_tokens, dropout=0.0,
        dtype=dtype,
    )


class Matching(keras.Model):
    def __init__(self, qformer, mode):
        super().__init__()
        self.qformer, self.mode = qformer, mode

    def call(self, inputs, training=None):
        return self.qformer(inputs, mode=self.mode, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        return sum(keras.ops.mean(keras.ops.cast(v, "float32") ** 2)
                   for v in y_pred.values())


def main():
    print("devices:", keras.distribution.list_devices())
    rng = np.random.default_rng(0)
    inputs = {
        "cf_embedding": rng.normal(size=(64, 32)).astype("float32"),
        "token_ids": rng.integers(6, 500, (64, 32)).astype("int32"),
        "padding_mask": np.ones((64, 32), bool),
    }
    inputs["padding_mask"][::3, 20:] = False
    failures = 0
    for k in (1, 8):
        full = build("float32", k)
        half = build("mixed_bfloat16", k)
        half.set_weights(full.get_weights())
        for mode in ("unimodal", "matching", "generation"):
            try:
                ref = Matching(full, mode).predict(inputs, batch_size=64, verbose=0)
                got = Matching(half, mode).predict(inputs, batch_size=64, verbose=0)
                worst = max(
                    float(np.max(np.abs(np.asarray(got[key], "float32") - ref[key])))
                    / float(np.max(np.abs(ref[key])))
                    for key in ref
                )
                ok = worst < 0.05
                print(f"k={k} {mode:10s} bf16 vs fp32 max rel err {worst:.4f} "
                      f"{'OK' if ok else 'FAIL'}")
            except Exception as error:  # report and go on to the next check
                ok = False
                print(f"k={k} {mode:10s} FAIL {type(error).__name__}: {str(error)[:300]}")
            failures += not ok
        try:
            model = Matching(half, "matching")
            model.compile(optimizer="adamw")
            history = model.fit(inputs, batch_size=32, epochs=2, verbose=0).history
            ok = all(np.isfinite(history["loss"]))
            print(f"k={k} bf16 fit loss {history['loss']} {'OK' if ok else 'FAIL'}")
        except Exception as error:
            ok = False
            print(f"k={k} bf16 fit FAIL {type(error).__name__}: {str(error)[:300]}")
        failures += not ok
    print("GPU CHECKS:", "all passed" if not failures else f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
