"""Property-based fuzzing of every parser that reads a file or a flag: whatever the input (random YAML/JSON
structures, mutations of the real files, broken text), it ends in an :class:`~edgekit.errors.EdgekitError`
or a success, never another exception (which would reach the user as a traceback)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
yaml = pytest.importorskip("yaml")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edgekit.errors import EdgekitError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
           | st.sampled_from(["", "..", "../x", "/etc/passwd", "a:b", "subprocess:Popen", "1x3x0x0", "nan", "-1"]))
keys = st.text(max_size=10) | st.sampled_from(["name", "stages", "kernel", "params", "model", "source", "steps", "id"])
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(keys, c, max_size=4),
                      max_leaves=16)
yaml_keys = keys | st.integers(-3, 3) | st.booleans()  # YAML mappings may have non-string keys
yaml_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(yaml_keys, c, max_size=4),
                           max_leaves=16)


def ends_well(fn, *args, **kw) -> None:
    """``fn`` succeeds or raises an edgekit error; anything else fails the test (it is the exception)."""
    try:
        fn(*args, **kw)
    except EdgekitError:
        pass


def _slots(doc, path=()):
    """Every (path) inside a JSON-like document, the root included."""
    yield path
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _slots(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _slots(v, (*path, i))


def mutate(data, base):
    """A copy of ``base`` with 1-4 random edits: a value replaced, a key deleted or added, a list emptied."""
    doc = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        path = data.draw(st.sampled_from(list(_slots(doc))), label="where")
        if not path:
            doc = data.draw(values, label="root") if data.draw(st.booleans()) else doc
            continue
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        op = data.draw(st.sampled_from(["replace", "delete", "add", "type"]), label="op")
        if op == "replace":
            parent[path[-1]] = data.draw(values, label="value")
        elif op == "delete":
            del parent[path[-1]]
        elif op == "add" and isinstance(parent, dict):
            parent[data.draw(keys, label="key")] = data.draw(values, label="value")
        else:  # the same content as another type
            v = parent[path[-1]]
            parent[path[-1]] = str(v) if not isinstance(v, str) else [v]
    return doc


def text_mutation(data, text: str) -> str:
    """``text`` truncated, or with a random snippet inserted (syntax errors, stray characters)."""
    at = data.draw(st.integers(0, len(text)), label="at")
    if data.draw(st.booleans(), label="truncate"):
        return text[:at]
    return text[:at] + data.draw(st.text(max_size=8) | st.sampled_from(["[", "{", ":", "- ", "&a", "*a", "\t", '"']),
                                 label="insert") + text[at:]


def write_doc(path: Path, doc, as_yaml: bool) -> None:
    try:
        path.write_text(yaml.safe_dump(doc, allow_unicode=True) if as_yaml else json.dumps(doc))
    except (ValueError, TypeError):  # e.g. json of a dict with non-string keys: write what YAML would
        path.write_text(yaml.safe_dump(doc, allow_unicode=True))


def draw_file(data, path: Path, real: Path | dict) -> None:
    """Write to ``path`` one of: a mutation of a real document, a random document, or the real document's text
    cut or with a stray snippet inserted. ``real`` is a YAML file, or a JSON document already read."""
    as_yaml = isinstance(real, Path)
    base = yaml.safe_load(real.read_text()) if as_yaml else real
    kind = data.draw(st.sampled_from(["mutation", "random", "text"]), label="kind")
    if kind == "mutation":
        write_doc(path, mutate(data, base), as_yaml=as_yaml)
    elif kind == "random":
        write_doc(path, data.draw(yaml_values if as_yaml else values, label="doc"), as_yaml=as_yaml)
    else:
        path.write_text(text_mutation(data, real.read_text() if as_yaml else json.dumps(base, indent=1)))


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


# -- --input-shape -----------------------------------------------------------------------------------------------
shape_text = st.text(max_size=30) | st.from_regex(r"\A([a-z_:]{0,6}:)?-?[0-9]{0,12}(x-?[0-9]{0,12}){0,7}\Z")


@pytest.mark.slow
@FUZZ
@given(st.lists(shape_text, max_size=4) | st.lists(values, max_size=3))
def test_fuzz_input_shape(flags):
    from edgekit.core.ingest import parse_input_shapes

    ends_well(parse_input_shapes, flags)


# -- pipeline YAML -----------------------------------------------------------------------------------------------
PIPELINE_FILE = ROOT / "profiles" / "pipelines" / "virtual-background.yaml"


@pytest.mark.slow
@FUZZ
@given(st.data())
def test_fuzz_pipeline_yaml(fuzz_dir, data):
    from edgekit.apps.pipeline.definition import load_pipeline

    f = fuzz_dir / "pipeline.yaml"
    draw_file(data, f, PIPELINE_FILE)
    ends_well(load_pipeline, f, cache=fuzz_dir / "cache")


# -- distill recipe ----------------------------------------------------------------------------------------------
RECIPE_FILE = ROOT / "models" / "portrait-seg" / "distill.yaml"


@FUZZ
@given(st.data())
def test_fuzz_recipe(fuzz_dir, data):
    from edgekit.apps.train.recipe import load_recipe

    f = fuzz_dir / "recipe.yaml"
    draw_file(data, f, RECIPE_FILE)
    ends_well(load_recipe, f, teacher_module=data.draw(st.none() | st.text(max_size=12), label="--teacher-module"))


# -- device profile ----------------------------------------------------------------------------------------------
PROFILES = sorted((ROOT / "profiles" / "devices").glob("*.yaml"))


@pytest.mark.slow
@FUZZ
@given(st.data())
def test_fuzz_device_profile(fuzz_dir, data):
    from edgekit.apps.profiling.device import load_profile

    f = fuzz_dir / "profile.yaml"
    base = data.draw(st.sampled_from(PROFILES), label="profile")
    draw_file(data, f, base)
    libs = data.draw(st.none() | st.lists(st.text(max_size=12) | st.just(f"gpu={f}"), max_size=2), label="libs")
    ends_well(load_profile, f, libs)


# -- model card --------------------------------------------------------------------------------------------------
CARD_FILE = ROOT / "models" / "portrait-seg" / "model.yaml"


@FUZZ
@given(st.data())
def test_fuzz_model_card(fuzz_dir, data):
    from edgekit.core.iospec import ModelCard

    f = fuzz_dir / "model.yaml"
    draw_file(data, f, CARD_FILE)
    ends_well(ModelCard.load, f)


# -- artifact.json -----------------------------------------------------------------------------------------------
CONFIGS = ROOT / "profiles" / "configs"


def _real_artifact() -> Path | None:
    found = sorted(CONFIGS.glob("*/*/artifact.json"))
    return found[0].parent if found else None


@pytest.fixture(scope="module")
def artifact_copy(fuzz_dir):
    src = _real_artifact()
    if src is None:
        pytest.skip("no shipped artifact to mutate")
    dst = fuzz_dir / "artifact"
    shutil.copytree(src, dst)
    return dst, json.loads((src / "artifact.json").read_text())


@pytest.mark.slow
@FUZZ
@given(st.data())
def test_fuzz_artifact_json(artifact_copy, data):
    from edgekit.core.artifact import Artifact

    folder, base = artifact_copy
    f = folder / "artifact.json"
    draw_file(data, f, base)
    ends_well(Artifact.load, folder)


# -- app config --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def config_copy(fuzz_dir):
    cfgs = sorted(CONFIGS.glob("*.json"))
    if not cfgs:
        pytest.skip("no shipped app config to mutate")
    dst = fuzz_dir / "configs"
    dst.mkdir()
    folder = cfgs[0].with_suffix("")
    if folder.is_dir():
        shutil.copytree(folder, dst / folder.name)
    shutil.copy(cfgs[0], dst / cfgs[0].name)
    return dst, json.loads(cfgs[0].read_text())


@FUZZ
@given(st.data())
def test_fuzz_app_config(config_copy, data):
    from edgekit.apps.profiling.appconfig import load_config

    folder, base = config_copy
    f = folder / "fuzz.json"
    draw_file(data, f, base)
    ends_well(load_config, f)


# -- inputs a generator rarely reaches ---------------------------------------------------------------------------
NASTY = {
    "deep": "[" * 5000 + "]" * 5000,
    "deep-map": "a: " * 3000 + "1",
    "alias-bomb": "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                  "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
    "recursive": "&a [*a]\n",
    "binary": b"\x00\xff\xfe\x80garbage",
    "tags": "!!python/object/apply:os.system ['touch PWNED']\n",
    "empty": "",
    "huge-int": "name: x\nsteps: 99999999999999999999999999999\n",
}


@pytest.mark.parametrize("name", sorted(NASTY))
def test_nasty_files_end_in_one_edgekit_error(tmp_path, name, monkeypatch):
    from edgekit.apps.pipeline.definition import load_pipeline
    from edgekit.apps.profiling.device import load_profile
    from edgekit.apps.train.recipe import load_recipe

    monkeypatch.chdir(tmp_path)
    f = tmp_path / "f.yaml"
    content = NASTY[name]
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    for parser in (load_pipeline, load_recipe, load_profile):
        try:
            parser(f)
        except EdgekitError as e:
            assert "\n" not in str(e)
    assert not (tmp_path / "PWNED").exists()
