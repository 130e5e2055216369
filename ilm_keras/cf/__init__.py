"""Collaborative-filtering embeddings: the item vectors ILM reads.

- `IALS`: implicit-feedback alternating least squares (NumPy), with fold-in.
- `TFRSMatrixFactorization`: two-tower MF trained by TensorFlow Recommenders
  in a child process (keeps the caller's Keras 3 untouched).
- `CFEmbeddings`: the trained user/item tables and their `.npz` file format.
- `interaction_matrix`: sequences -> sparse user x item counts.
"""

from ilm_keras.cf.embeddings import CFEmbeddings
from ilm_keras.cf.embeddings import check_table
from ilm_keras.cf.ials import IALS
from ilm_keras.cf.interaction_matrix import interaction_matrix
from ilm_keras.cf.tfrs_mf import TFRSMatrixFactorization
