"""Every recipe shipped in recipes/ (and by installed plugins) validates against its method's schema."""

import pytest

from toolbox import plugins, recipes


def _shipped():
    return [r for r in recipes.list_recipes()]


@pytest.mark.parametrize("recipe", _shipped(), ids=lambda r: r["name"])
def test_shipped_recipe_validates(recipe):
    registry = plugins.load().registry
    method = registry.method(recipe["method"])
    validated, text = recipes.load_recipe(method, recipe["path"], ())
    assert validated.method == method.name and text
    if validated.expect is not None:
        assert validated.expect.source, f"{recipe['name']} states a number without its source"


@pytest.mark.parametrize("method, values, expected", [
    ("sam", {"dataset": "cifar10", "arch": "wrn-16-8"}, "sam/cifar10-wrn16_8"),
    ("supervised", {"dataset": "cifar10", "arch": "wrn-40-2"}, "supervised/cifar10-wrn40_2"),
    ("fds", {"dataset": "cifar10", "arch": "wrn-16-1"}, "fds/cifar10-wrn16_1"),
    ("supervised", {"dataset": "digits", "arch": "mlp"}, "supervised/digits"),  # no digits-mlp recipe: the dataset's
    ("dm", {"dataset": "cifar10", "ipc": "50"}, "condense/cifar10-dm-ipc50"),
    ("dm", {"dataset": "tiny-imagenet", "ipc": "1"}, "condense/tiny-imagenet-dm-ipc1"),
    ("dm", {"dataset": "tiny-imagenet"}, "condense/tiny-imagenet-dm-ipc10"),
    ("supervised", {"dataset": "tiny-imagenet", "arch": "vit-spt-lsa"}, "supervised/tiny-imagenet-vit_spt_lsa"),
])
def test_cli_options_pick_the_matching_shipped_recipe(method, values, expected):
    chooser = plugins.load().registry.method(method).choose_recipe
    assert next(name for name in chooser(values) if recipes.recipe_exists(name)) == expected
