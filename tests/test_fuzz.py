"""Seeded random mutations of the shipped YAMLs: each builds a model that runs, or is rejected with its row named.

Never a crash deep inside PyTorch, never a model that silently differs from its YAML. `pytest -s` prints the tally.
"""

import random
import re
from collections import Counter
from copy import deepcopy

import pytest
import torch
import ultralytics.nn.tasks as tasks
import yaml
from helpers import MODEL_CLASSES
from ultralytics.nn.tasks import guess_model_task

from yolo_attn import operators
from yolo_attn.lookup import shipped_dir
from yolo_attn.operators import plugin_modules
from yolo_attn.yaml_checks import names_module

N_MUTATIONS = 400  # the exhaustive run; the fast set checks the first FAST_MUTATIONS of the same seeded sequence
FAST_MUTATIONS = 20
# A rejection names what is wrong as the plugin's errors do: "[file.yaml: ]layer 5 (CoordAtt): ...", a section or a key.
NAMED = re.compile(r"^(?:[\w.-]+\.yaml: )?(?:layer \d+[ :]|the '(?:backbone|head)' section |unknown top-level key )")
YAMLS = sorted(shipped_dir("model_yamls").glob("*.yaml"))
NAMES = [*plugin_modules(), "Conv", "C2f", "C3k2", "SPPF", "Concat", "NoSuchModule"]
VALUES = [True, False, 0, -1, 1, 3, 7, 16, 2.5, 0.5, None, "x", "None", "False", "3", [1, 2], [], {"a": 1}]


def _misspelled(word: str, rng: random.Random) -> str:
    """`word` with one letter dropped, or two neighbours swapped."""
    j = rng.randrange(len(word) - 1)
    return word[:j] + word[j + 1 :] if rng.random() < 0.5 else word[:j] + word[j + 1] + word[j] + word[j + 2 :]


def _mutate(d: dict, rng: random.Random) -> str:
    """Mutate one row of `d` in place (a plugin row half of the time); return what was done."""
    rows = [*d["backbone"], *d["head"]]
    plugin = [i for i, row in enumerate(rows) if row[2] in plugin_modules()]
    i = rng.choice(plugin) if plugin and rng.random() < 0.5 else rng.randrange(len(rows))
    row = rows[i]
    kind = rng.choice(["index", "args", "types", "repeats", "module", "shape", "typo", "section"])
    if kind == "section":  # a misspelled section key: `bakbone:`
        key = rng.choice(["backbone", "head"])
        d[_misspelled(key, rng)] = d.pop(key)
        return f"section {key} misspelled"
    if kind == "typo":  # a misspelled module name: `CoTAtention`
        row[2] = _misspelled(str(row[2]), rng)
    elif kind == "index":
        row[0] = rng.choice([rng.randint(-i - 2, i + 2), [-1, rng.randint(-i - 2, i + 2)], "x"])
    elif kind == "args" and row[3]:
        j = rng.randrange(len(row[3]) + 1)
        if j == len(row[3]):
            row[3].append(rng.choice(VALUES))
        elif rng.random() < 0.3:
            del row[3][j]
        else:
            row[3][j] = rng.choice(VALUES)
    elif kind == "types" and row[3]:
        j = rng.randrange(len(row[3]))
        row[3][j] = rng.choice([str(row[3][j]), [row[3][j]], bool(row[3][j]) if row[3][j] is not None else 0])
    elif kind == "repeats":
        row[1] = rng.choice([0, -1, 1, 2, 3, 1.5, "2", True])
    elif kind == "module":
        row[2] = rng.choice(NAMES)
    else:
        del row[rng.randrange(len(row))]
    return f"{kind} of layer {i}: {row}"


def _says_what_it_builds(model: torch.nn.Module, d: dict) -> list:
    """Return the rows whose built layer is not the module, or not the number of repeats, the YAML names."""
    depth = d["scales"][d["scale"]][0] if d.get("scales") else d.get("depth_multiple", 1.0)
    wrong = []
    for i, (layer, (_, n, name, _)) in enumerate(zip(model.model, [*d["backbone"], *d["head"]])):
        blocks = list(layer) if type(layer) is torch.nn.Sequential else [layer]
        repeats = max(round(n * depth), 1) if n > 1 else n
        modules = plugin_modules()
        if name in modules and operators.load_row(name).n_supplied == 3:  # CSP block: the repeats are its inner blocks
            blocks = [blocks[0]] * len(blocks[0].m)
        if type(blocks[0]).__name__ != name.split(".")[-1] or (name in modules and len(blocks) != repeats):
            wrong.append(f"layer {i}: YAML {name} x{repeats}, built {type(blocks[0]).__name__} x{len(blocks)}")
    return wrong


@pytest.mark.filterwarnings("ignore")
@pytest.mark.usefixtures("one_thread")  # tiny models: one thread is ~10x faster than two fighting over a shared CPU
@pytest.mark.parametrize("n_mutations", [FAST_MUTATIONS, pytest.param(N_MUTATIONS, marks=pytest.mark.exhaustive)])
def test_mutated_yamls_build_and_run_or_name_their_row(tmp_path, n_mutations):
    rng = random.Random(0)
    bases = {path.name: tasks.yaml_model_load(str(path)) for path in YAMLS}
    tally, bad = Counter(), []
    for _ in range(n_mutations):
        name = rng.choice(sorted(bases))
        d = {**deepcopy(bases[name]), "scale": "n"}
        what = _mutate(d, rng)
        rows = [*d.get("backbone", []), *d.get("head", [])]
        if not what.startswith("section") and not any(names_module(row, plugin_modules()) for row in rows):
            tally["no plugin row left (the stock parser's own business): skipped"] += 1
            continue
        path = tmp_path / re.sub(r"^(yolov?\d+)", r"\1n", name)  # a file, as users write them, at scale n
        path.write_text(yaml.safe_dump({k: v for k, v in d.items() if k != "yaml_file"}, sort_keys=False))
        try:
            model = MODEL_CLASSES[guess_model_task(str(path))](str(path), verbose=False).eval()
            with torch.no_grad():
                model(torch.rand(1, 3, 64, 64))
        except Exception as e:
            tally[f"rejected, {type(e).__name__}"] += 1
            if not NAMED.search(str(e)):
                bad.append(f"{name}, {what}: {type(e).__name__} without the row or section named: {e}")
            continue
        tally["built and ran"] += 1
        bad += [f"{name}, {what}: {w}" for w in _says_what_it_builds(model, d)]
    summary = f"{n_mutations} mutations: " + ", ".join(f"{k}: {v}" for k, v in sorted(tally.items()))
    print(f"\n{summary}")
    assert not bad, summary + "\n" + "\n".join(bad[:10])
    tried = n_mutations - tally["no plugin row left (the stock parser's own business): skipped"]
    assert tally["built and ran"] >= 0.2 * tried, (
        f"too few mutations build: a checker that rejects all passes ({summary})"
    )
