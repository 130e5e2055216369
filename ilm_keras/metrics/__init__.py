"""Evaluation metrics: ranking (HR/NDCG), retrieval, perplexity, semantics.

- `hit_rate_at_k`, `ndcg_at_k`, `target_ranks`: OpenP5's HR@k / NDCG@k on
  ranked lists (one target per user).
- `top_k_items`, `evaluate_retrieval`: full ranking by user . item scores,
  optionally excluding history items.
- `log_perplexity`, `LogPerplexity`, `token_nll`: mean token NLL (keras.ops).
- `semantic_consistency`, `MiniLMSentenceEncoder`: cosine of sentence
  embeddings of generated vs reference text (encoder optional/injectable).
"""

from ilm_keras.metrics.perplexity import LogPerplexity
from ilm_keras.metrics.perplexity import log_perplexity
from ilm_keras.metrics.perplexity import token_nll
from ilm_keras.metrics.ranking import hit_rate_at_k
from ilm_keras.metrics.ranking import ndcg_at_k
from ilm_keras.metrics.ranking import target_ranks
from ilm_keras.metrics.retrieval import evaluate_retrieval
from ilm_keras.metrics.retrieval import top_k_items
from ilm_keras.metrics.semantic import MiniLMSentenceEncoder
from ilm_keras.metrics.semantic import semantic_consistency
