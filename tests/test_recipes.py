"""Recipes: overrides are typed YAML values, YAML tags that run code are refused, and every problem
is a UsageError naming the key or the file."""

import pytest

from toolbox import recipes
from toolbox.errors import UsageError
from toolbox.registry import current


@pytest.fixture
def supervised():
    return current().method("supervised")


@pytest.mark.parametrize("text, path, value", [
    ("optim.lr=0.05", ["optim", "lr"], 0.05),
    ("epochs=3", ["epochs"], 3),
    ("optim.nesterov=true", ["optim", "nesterov"], True),
    ("schedule.milestones=[10, 20]", ["schedule", "milestones"], [10, 20]),
    ("data.synthetic=null", ["data", "synthetic"], None),
    ("description=[draft", ["description"], "[draft"),  # not valid YAML: kept as the string
    ("model.kwargs={depth: 2}", ["model", "kwargs"], {"depth": 2}),
])
def test_override_values_are_typed(text, path, value):
    assert recipes.parse_override(text) == (path, value)


@pytest.mark.parametrize("text", ["epochs", "=3", "optim..lr=1", ".lr=1"])
def test_malformed_override_is_a_usage_error(text):
    with pytest.raises(UsageError, match="is not of the form key.sub=value"):
        recipes.parse_override(text)


def test_overrides_reach_the_validated_recipe(supervised):
    recipe, text = recipes.load_recipe(supervised, "supervised/digits", ["optim.lr=0.01", "model.arch=mlp"])
    assert recipe.optim.lr == 0.01 and recipe.model.arch == "mlp" and recipe.epochs == 30
    assert "lr: 0.01" in text and recipes.recipe_hash(text) == recipes.recipe_hash(recipes.dump(recipe))


def test_python_yaml_tags_are_refused(tmp_path, supervised):
    evil = tmp_path / "evil.yaml"
    evil.write_text("method: supervised\nepochs: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(UsageError, match="is not valid YAML"):
        recipes.load_recipe(supervised, str(evil))
    assert not (tmp_path / "pwned").exists()


def test_file_problems_name_the_file_and_line(tmp_path, supervised):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: supervised\nepochs: [1, 2\n")
    with pytest.raises(UsageError, match=r"bad.yaml is not valid YAML at line 3"):
        recipes.load_recipe(supervised, str(bad))
    bad.write_text("- a list\n")
    with pytest.raises(UsageError, match="must be a mapping of keys to values, not a list"):
        recipes.load_recipe(supervised, str(bad))


def test_recipe_of_another_method_and_method_override_are_refused(supervised):
    with pytest.raises(UsageError, match="is for method 'zskt', not 'supervised'"):
        recipes.load_recipe(supervised, "zskt/digits")
    with pytest.raises(UsageError, match="'method' key cannot be overridden"):
        recipes.load_recipe(supervised, None, ["method=zskt"])


def test_recipe_names_and_paths_resolve_to_the_same_file():
    path = recipes.find_recipe("supervised/digits")
    assert recipes.find_recipe("recipes/supervised/digits.yaml") == path
    assert recipes.find_recipe(str(path)) == path
    assert {"supervised/digits", "zskt/digits"} <= {r["name"] for r in recipes.list_recipes()}


def _numeric_fields(model, prefix=""):
    """(dotted key, [(int|float, bounds)]) for every number field of a schema, sections included."""
    for name, field in model.model_fields.items():
        section = recipes._section_type(field.annotation)
        if isinstance(section, type) and issubclass(section, recipes.BaseModel):
            yield from _numeric_fields(section, f"{prefix}{name}.")
            continue
        numbers = recipes.numeric_bounds(field.annotation, field.metadata)
        if numbers:
            yield f"{prefix}{name}", numbers


def _schemas():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "toolbox-compression-mixup"))
    try:
        from toolbox_mixup.recipe import MixupRecipe
    finally:
        sys.path.pop(0)
    registered = {m.name: m.recipe_model() for m in current().methods.values() if m.schema is not None}
    return {**registered, "mixup (example)": MixupRecipe}


def test_every_number_in_every_schema_has_a_lower_and_an_upper_bound():
    schemas = _schemas()
    assert {"supervised", "sam", "kd", "zskt", "dc", "dsa", "dm", "fds"} <= set(schemas)
    unbounded = []
    for method, schema in schemas.items():
        fields = list(_numeric_fields(schema))
        assert any(key.endswith(("epochs", "iterations", "steps")) for key, _ in fields), method  # the walk sees them
        for key, numbers in fields:
            for kind, bounds in numbers:
                if not ({"ge", "gt"} & set(bounds)) or not ({"le", "lt"} & set(bounds)):
                    unbounded.append(f"{method}: {key} ({kind.__name__}, {bounds})")
    assert not unbounded, "numbers without a valid range: " + "; ".join(unbounded)


def test_the_walk_sees_an_unbounded_field():
    from pydantic import Field

    class Loose(recipes.RecipeBase):
        epochs: int = 3
        lr: float | None = None
        milestones: list[int] = []
        ok: recipes.Count = 1
        half: float = Field(0.5, ge=0)

    found = dict(_numeric_fields(Loose))
    assert found["epochs"] == [(int, {})] and found["lr"] == [(float, {})] and found["milestones"] == [(int, {})]
    assert found["ok"] == [(int, {"ge": 1, "le": recipes.MAX_STEPS})] and found["half"] == [(float, {"ge": 0})]
    assert found["seed"] == [(int, {"ge": 0, "le": recipes.MAX_SEED})]


@pytest.mark.parametrize("override, message", [
    ("data.batch_size=-1", "recipe key 'data.batch_size' (--batch-size) in recipe supervised/digits: "
                           "must be an integer from 1 to 1000000 (got -1)"),
    ("epochs=0", "recipe key 'epochs' (--epochs) in recipe supervised/digits: must be an integer from 1 to 10000000 (got 0)"),
    ("epochs=1e20", "must be an integer from 1 to 10000000 (got 1e+20)"),
    ("epochs=2.5", "must be an integer from 1 to 10000000 (got 2.5)"),
    ("epochs=true", "must be an integer from 1 to 10000000 (got True)"),
    ("eval_every=0", "recipe key 'eval_every' in recipe supervised/digits: must be an integer from 1 to 10000000"),
    ("optim.lr=-0.1", "recipe key 'optim.lr' (--lr) in recipe supervised/digits: must be a number > 0 and <= 10 (got -0.1)"),
    ("optim.lr=.nan", "must be a number > 0 and <= 10 (got nan)"),
    ("optim.momentum=1", "recipe key 'optim.momentum' in recipe supervised/digits: must be a number >= 0 and < 1 (got 1)"),
    ("schedule.milestones=[3, -1]", "recipe key 'schedule.milestones' in recipe supervised/digits: each element must be "
                                    "an integer from 1 to 10000000 (got -1)"),
    ("schedule.milestones=[3, 3]", "recipe key 'schedule.milestones' in recipe supervised/digits: must increase strictly"),
    ("seed=-1", "recipe key 'seed' (--seed) in recipe supervised/digits: must be an integer from 0 to 4294967295 (got -1)"),
    ("checkpoint_every=-5", "recipe key 'checkpoint_every' in recipe supervised/digits: must be an integer from 0 to "),
])
def test_numbers_out_of_range_name_the_key_and_the_range(supervised, override, message):
    with pytest.raises(UsageError) as e:
        recipes.load_recipe(supervised, "supervised/digits", [override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_yaml_numbers_in_exponent_form_are_numbers(supervised):
    recipe, _ = recipes.load_recipe(supervised, "supervised/digits", ["optim.lr=1e-3", "optim.weight_decay=5E-4"])
    assert recipe.optim.lr == 0.001 and recipe.optim.weight_decay == 0.0005


def test_a_key_given_twice_in_a_recipe_is_refused_with_its_lines(tmp_path, supervised):
    twice = tmp_path / "twice.yaml"
    twice.write_text("method: supervised\nepochs: 3\noptim:\n  lr: 0.1\n  momentum: 0.9\n  lr: 0.5\n")
    with pytest.raises(UsageError, match=r"recipe .*twice.yaml: key 'lr' is given twice, at lines 4 and 6; keep one"):
        recipes.load_recipe(supervised, str(twice))
    # the same key in different sections, and YAML merge keys, are not duplicates
    fine = tmp_path / "fine.yaml"
    fine.write_text("method: supervised\noptim:\n  lr: 0.2\nsam:\n  rho: 0.1\n  eta: 2\n")
    recipe, _ = recipes.load_recipe(supervised, str(fine))
    assert recipe.optim.lr == 0.2 and recipe.sam.rho == 0.1
    assert recipes.yaml_load("a: &a {x: 1, y: 2}\nb:\n  <<: *a\n  x: 3\n") == {"a": {"x": 1, "y": 2}, "b": {"x": 3, "y": 2}}


def test_a_saved_recipe_reads_back_as_the_same_recipe(supervised):
    recipe, text = recipes.load_recipe(supervised, "supervised/digits", ["description='1e5'", "optim.lr=1e-3"])
    assert recipe.description == "1e5" and "'1e5'" in text
    again = recipes.yaml_load(text)
    assert again["description"] == "1e5" and again["optim"]["lr"] == 0.001
    assert supervised.recipe_model().model_validate(again) == recipe


def test_an_expected_number_is_dropped_when_the_dataset_is_changed():
    from toolbox import plugins
    from toolbox.recipes import load_recipe

    method = plugins.load().registry.method("supervised", "train")
    kept, _ = load_recipe(method, "supervised/digits", ["epochs=3"])
    moved, text = load_recipe(method, "supervised/digits", ["data.dataset=mnist"])
    assert kept.expect is not None and kept.expect.value == 0.97
    assert moved.expect is None and "expect: null" in text.splitlines()
