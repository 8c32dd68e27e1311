"""No code on load: nothing in the package unpickles (torch.load, pickle, unsafe YAML, numpy pickles).
Weights are safetensors, configs and state JSON; this keeps it so."""

import ast
import pickle
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cli", "transformer", "data", "transformer_cli")
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
UNSAFE_CALLS = {"torch.load", "torch.jit.load", "torch.serialization.load", "pickle.load", "pickle.loads",
                "yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all",
                "pandas.read_pickle", "pd.read_pickle"}


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


def unsafe_uses(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(node.module)
        elif isinstance(node, ast.Call):
            name = dotted(node.func)
            if name in UNSAFE_CALLS:
                found.append(name)
            pickles = any(k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant) and not k.value.value)
                          for k in node.keywords)
            if name.endswith(".load") and pickles:
                found.append(f"{name}(allow_pickle=...)")
    return found


def test_the_scanner_sees_each_unsafe_form():
    code = ("import pickle\nfrom dill import loads\nimport torch, yaml, numpy as np\ntorch.load('x')\n"
            "yaml.load(s)\nnp.load('a', allow_pickle=True)\nyaml.safe_load(s)\nnp.load('b')\n")
    assert unsafe_uses(ast.parse(code)) == ["pickle", "dill", "torch.load", "yaml.load",
                                            "np.load(allow_pickle=...)"]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_loads_pickle(package):
    for path in sorted((ROOT / package).rglob("*.py")):
        assert unsafe_uses(ast.parse(path.read_text())) == [], path


def test_loading_a_model_unpickles_nothing(cli, model_dir, monkeypatch):
    import torch

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    result = cli("translate", "--model", model_dir, "-b", "2", input="I am a student.\n")
    assert result.exit_code == 0, result.output
    result = cli("inspect-attention", "--model", model_dir, "I am a student.", "--format", "json")
    assert result.exit_code == 0, result.output


def test_a_yaml_config_with_a_python_tag_is_refused_and_runs_nothing(tmp_path):
    from transformer_cli.errors import RunError
    from transformer_cli.train_config import read_config_file

    marker = tmp_path / "ran"
    config = tmp_path / "evil.yaml"
    config.write_text(f"preset: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(RunError, match="cannot parse"):
        read_config_file(config)
    assert not marker.exists()
