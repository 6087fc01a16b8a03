"""Parsing source strings: torch-free, one clear message for each kind of mistake."""

import subprocess
import sys

import pytest

from models.sources import SourceError, missing_extra, parse_source


def test_a_bare_name_is_a_fovea_model() -> None:
    assert parse_source("resnet-student").kind == "fovea"
    assert parse_source("fovea:vit-student").target == "vit-student"


def test_module_sources_split_into_module_and_factory() -> None:
    src = parse_source("module:my_pkg.nets:make_backbone")
    assert (src.kind, src.module, src.factory) == ("module", "my_pkg.nets", "make_backbone")


def test_a_misspelt_kind_names_the_known_kinds() -> None:
    with pytest.raises(SourceError, match="unknown model source kind 'hugginface'") as e:
        parse_source("hugginface:vit.json")
    for kind in ("fovea", "module", "hf", "timm", "torchvision", "onnx"):
        assert f"{kind}:" in str(e.value)


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("module:my_pkg.nets", "expected module:package.module:factory"),
        ("module:my-pkg.nets:make", "dotted Python module path"),
        ("module:my_pkg.nets:make-it", "is not a Python name"),
        ("hf:", "names nothing"),
    ],
)
def test_a_malformed_source_says_what_shape_it_needs(text: str, what: str) -> None:
    with pytest.raises(SourceError, match=what):
        parse_source(text)


def test_a_missing_package_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "timm" else real(name, *a)
    )
    assert missing_extra("timm") is not None
    extra = r"install the timm extra: pip install 'fovea-edge\[timm\]'"
    with pytest.raises(SourceError, match=extra):
        parse_source("timm:resnet18")


def test_parsing_imports_no_torch() -> None:
    code = (
        "import sys; import models.sources as s; s.parse_source('fovea:x'); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
