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
