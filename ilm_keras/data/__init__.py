"""Data: loaders, the OpenP5 split, phase-1 pairs and prompt templates.

Every loader returns `InteractionData`. Typical use:

```python
from ilm_keras import data as ild

data = ild.load_openp5("../shared/data/openp5/ML100K",
                       item_texts_from="../shared/data/ml-100k")
split = ild.leave_last_out(data, max_history=20)
items, texts = ild.item_text_pairs(data)
item_pairs = ild.item_item_pairs(split.train_sequences)
user_pairs = ild.user_item_pairs(split.train_sequences)
train = ild.training_prompts(split, epoch=0, seed=0)
test = ild.evaluation_prompts(split, "test", "sequential", template=0)
```

`python -m ilm_keras.data stats PATH` prints the size of a dataset folder.
This package needs only NumPy and pandas: importing it (or running that
command) imports neither Keras nor TensorFlow nor JAX; `make_phase1_dataset`,
which builds a `tf.data` pipeline, is `ilm_keras.make_phase1_dataset`.
"""

from ilm_keras.data.interactions import InteractionData
from ilm_keras.data.movielens import build_interaction_data
from ilm_keras.data.movielens import item_text
from ilm_keras.data.movielens import load_ml1m
from ilm_keras.data.movielens import load_ml25m
from ilm_keras.data.movielens import load_ml100k
from ilm_keras.data.movielens import load_movielens
from ilm_keras.data.movielens import read_movies
from ilm_keras.data.openp5 import load_openp5
from ilm_keras.data.openp5 import random_indexing
from ilm_keras.data.openp5 import read_index_file
from ilm_keras.data.pair_sequences import ConcatenatedPairs
from ilm_keras.data.pair_sequences import PairSequence
from ilm_keras.data.pair_sequences import distinct_responses
from ilm_keras.data.pairs import item_item_pairs
from ilm_keras.data.pairs import item_text_pairs
from ilm_keras.data.pairs import user_item_pairs
from ilm_keras.data.splits import LeaveLastOutSplit
from ilm_keras.data.splits import SequenceExamples
from ilm_keras.data.splits import leave_last_out
from ilm_keras.data.synthetic import make_synthetic_data
from ilm_keras.data.templates import CONVERSATION_TASKS
from ilm_keras.data.templates import RECOMMENDATION_TASKS
from ilm_keras.data.templates import SEQUENTIAL
from ilm_keras.data.templates import STRAIGHTFORWARD
from ilm_keras.data.templates import TaskTemplates
from ilm_keras.data.templates import conversation_prompts
from ilm_keras.data.templates import evaluation_prompts
from ilm_keras.data.templates import format_prompt
from ilm_keras.data.templates import prompt_pairs
from ilm_keras.data.epoch_prompts import TrainingPrompts
from ilm_keras.data.epoch_prompts import training_prompts
