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
