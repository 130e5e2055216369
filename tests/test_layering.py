"""The package reads top-down: no folder imports a folder above it.

`LAYERS` lists the folders of `ilm_keras`, lowest first. A module may import
its own folder and the folders before it in the list, never one after it
(e.g. `data` must not import `models`; the LLM loaders must not import
`data` or `models`). Checked on the source with `ast`, imports inside
functions included; `from ilm_keras import X` counts as an import of the
folder that defines `X`. Printed with `-s`: the folder-level import graph.
"""

import ast
import pathlib

import ilm_keras

PACKAGE = pathlib.Path(ilm_keras.__file__).resolve().parent
LAYERS = [
    "utils",  # files, determinism, resumable fit, texts, logs
    "cf",  # iALS, TFRS matrix factorization, CFEmbeddings
    "data",  # loaders, splits, prompt templates, phase-1 pairs
    "metrics",  # ranking, retrieval, perplexity, semantic consistency
    "generation",  # item trie, constrained beam search
    "layers",  # Q-Former blocks, adaptors, soft tokens, backbone adapters
    "tokenizers",  # the Q-Former's and the OpenP5 decoder's tokenizers
    "llm",  # packaged LLM weights, GGUF readers, causal LM loading
    "models",  # QFormer(+Pretrainer), ItemLanguageModel(+Backbone, Preprocessor)
    "distribution",  # layout maps, per-process input shards
    "experiments",  # named configs, pipelines, the entry point
    "chat",  # the terminal conversation
    "serve",  # the HTTP server and page
]


def imported_folders(path):
    """`{folder: [line numbers]}` of the `ilm_keras` folders `path` imports."""
    tree = ast.parse(path.read_text(), str(path))
    found = {}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "ilm_keras":
                for alias in node.names:
                    module = ilm_keras._EXPORTS.get(alias.name, f"ilm_keras.{alias.name}")
                    names.append(module)
            else:
                names.append(node.module)
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "ilm_keras" and len(parts) > 1 and parts[1] in LAYERS:
                found.setdefault(parts[1], []).append(node.lineno)
    return found


def folder_graph():
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if len(relative.parts) < 2:
            continue  # the top-level `__init__` / `version` re-export all
        folder = relative.parts[0]
        for target, lines in imported_folders(path).items():
            if target != folder:
                graph.setdefault(folder, {}).setdefault(target, []).append(
                    f"{relative}:{lines[0]}"
                )
    return graph


def test_every_folder_is_listed():
    folders = {
        p.name for p in PACKAGE.iterdir()
        if p.is_dir() and (p / "__init__.py").exists()
    }
    assert folders == set(LAYERS), (
        f"unlisted: {sorted(folders - set(LAYERS))}, "
        f"gone: {sorted(set(LAYERS) - folders)}"
    )


def test_no_folder_imports_a_higher_one():
    graph = folder_graph()
    for folder in LAYERS:
        targets = graph.get(folder, {})
        print(f"{folder:>12} -> {', '.join(sorted(targets, key=LAYERS.index))}")
    wrong = [
        f"{folder} -> {target} ({', '.join(where)})"
        for folder, targets in graph.items()
        for target, where in targets.items()
        if LAYERS.index(target) > LAYERS.index(folder)
    ]
    assert not wrong, "imports from a lower folder to a higher one:\n" + "\n".join(
        wrong
    )
